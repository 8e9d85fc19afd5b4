//! `hummel push`: a tree chunked and packed on an admin's machine, published at a prefix.
//!
//! - [`Staging`]: packs uploaded by pushes and not yet published, in `DATA/push-staging/`
//!   (one `HASH.pack` file each, outside the store: never served, listed or collected by the
//!   garbage collection). Each was verified when it arrived (its hash, its table of contents,
//!   every chunk decodes to its id). A staged pack unused for [`STAGED_GRACE`] is deleted; until
//!   then the next push's missing query counts its chunks as held, so an interrupted push
//!   resumes where it stopped (across a master restart too: the folder is read at start).
//! - [`Master::push_missing`] (`POST /api/v1/push/missing`): the repository's chunker, pack
//!   level and current revision, and which of the asked chunks neither the current revision
//!   nor a staged pack holds.
//! - [`pack_handler`] (`PUT /api/v1/push/packs/{hash}`): the body streams into a temp file in
//!   the staging folder, through a bounded queue to a blocking thread that hashes it as it
//!   writes ([`Master::stage_upload`]; at most [`MAX_PUSH_PACK`] bytes, 413 beyond). That
//!   thread then checks the hash, reads the table of contents and every chunk back from the
//!   file ([`verify_pack_file`]), fsyncs and renames it: memory per upload is the queue and
//!   one chunk, uploads verify in parallel, and a pack that fails any check is deleted, never
//!   staged.
//! - [`Master::push_publish`] (`POST /api/v1/push/publish`): under the builds' start lock (no
//!   build runs, a repack under way stops), the current revision with the prefix replaced by
//!   the pushed tree is published through [`Master::publish`] (signed statement, event, note
//!   with the message). A push names the revision it read: when another revision was
//!   published since and the prefix's entries (or a file above it) differ between the two,
//!   it is refused (409 `push_conflict`); otherwise it lands on top of the current revision.
//!   The staged packs it uses are moved into the store and numbered then. The mass-delete
//!   guard applies against the current tree.
//! - Staged packs are hashed again at publish, before the builds' lock is taken and in
//!   parallel ([`Master::recheck_staged`]): a staged file may have sat on disk for days, and
//!   a pack under its final store name has always verified. Packs this process verified
//!   less than [`VERIFIED_FRESH`] ago are not (the push that uploaded them publishes right
//!   after; hashing 1 GiB again would be CPU and wall time the push waits for, for a
//!   file the master itself wrote, fsynced and read back minutes before); packs found at
//!   start, or older, are. Under the lock they are only
//!   renamed into the store ([`hummel_store::BlobStore::adopt`], size checked). A staged
//!   pack found damaged is deleted, so the next push uploads it again.
//! - Pushes that name themselves (an id) are followed in [`crate::push_progress`], for the
//!   status and the dashboard; those without one are served alike, unfollowed.
//! - Pushes and the repository folder: a master is fed by its folder or by pushes. A push is
//!   refused while the folder holds anything, and once a push published, `DATA/pushed` says
//!   so and every folder build fails in one line ([`fed_by_pushes`]): a build would replace
//!   the pushed tree by the (empty) folder.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{StatusCode, header};
use futures::StreamExt;
use hummel_core::changes::{ChangeSummary, changes};
use hummel_core::chunk::MAX_CHUNK_SIZE;
use hummel_core::pack::{PackEntry, read_toc};
use hummel_core::{
    ChunkLocation, DirEntry, Entry, EntryKind, FileEntry, Hash, Index, PackInfo, RelPath,
};
use hummel_proto::api::{
    MAX_PUSH_MANIFEST, MAX_PUSH_MISSING, MAX_PUSH_PACK, PushMissingRequest, PushMissingResponse,
    PushPublishRequest, PushPublishResponse, valid_message, valid_push_id,
};
use hummel_store::TempBlob;
use rayon::prelude::*;
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::api::{ApiError, ApiJson, Bounded, blocking};
use crate::auth::WriteAccess;
use crate::master::{IndexLookupError, Master, NewRevision};
use crate::push_progress::{BookFull, PushBook};
use crate::{lock, now_ms, read};

/// A staged pack this process verified (at its upload) less than this long ago is not hashed
/// again at publish.
pub(crate) const VERIFIED_FRESH: Duration = Duration::from_secs(10 * 60);
/// A staged pack no push published for this long is deleted.
pub(crate) const STAGED_GRACE: Duration = Duration::from_secs(7 * 86_400);
/// The marker a push leaves in the data folder.
const PUSHED_MARKER: &str = "pushed";
/// Folders of new paths (the prefix's parents) get this mode.
const DIR_MODE: u32 = 0o755;
/// Body pieces queued between an upload's connection and the thread writing it (each at most
/// hyper's read buffer, about 400 KiB; usually far less).
const UPLOAD_QUEUE: usize = 16;
/// The buffer in front of an upload's temp file.
const UPLOAD_BUFFER: usize = 256 << 10;

/// Whether a push published on the master with data folder `data` (folder builds refuse).
pub(crate) fn fed_by_pushes(data: &Path) -> bool {
    data.join(PUSHED_MARKER).exists()
}

/// Packs uploaded by pushes, not yet published.
#[derive(Debug)]
pub(crate) struct Staging {
    dir: PathBuf,
    /// Pack hash → its table of contents.
    pub(crate) packs: Mutex<HashMap<Hash, Vec<PackEntry>>>,
    /// Names uploads' temp files apart (two uploads of one pack may run at once).
    temp_seq: AtomicU64,
    /// Pack hash → when this process verified its upload (dropped after [`VERIFIED_FRESH`]).
    verified: Mutex<HashMap<Hash, Instant>>,
    /// The pushes that name themselves, and how far each is.
    pub(crate) progress: PushBook,
}

impl Staging {
    /// The staging folder below `data`, with the packs it holds (unreadable ones deleted).
    pub(crate) fn open(data: &Path) -> Staging {
        let dir = data.join("push-staging");
        let mut packs = HashMap::new();
        if let Ok(list) = fs::read_dir(&dir) {
            for e in list.flatten() {
                let path = e.path();
                let hash = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".pack"))
                    .and_then(|h| h.parse::<Hash>().ok());
                let toc = fs::File::open(&path)
                    .and_then(|f| {
                        let size = f.metadata()?.len();
                        read_toc(f, size).map_err(std::io::Error::other)
                    })
                    .ok();
                match (hash, toc) {
                    (Some(h), Some(toc)) => {
                        packs.insert(h, toc);
                    }
                    _ => {
                        let _ = fs::remove_file(&path);
                    }
                }
            }
        }
        Staging {
            dir,
            packs: Mutex::new(packs),
            temp_seq: AtomicU64::new(0),
            verified: Mutex::new(HashMap::new()),
            progress: PushBook::default(),
        }
    }

    fn path(&self, hash: &Hash) -> PathBuf {
        self.dir.join(format!("{}.pack", hash.to_hex()))
    }

    /// Deletes staged packs older than [`STAGED_GRACE`].
    fn prune(&self) {
        let now = SystemTime::now();
        lock(&self.packs).retain(|h, _| {
            let path = self.path(h);
            let old = fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > STAGED_GRACE);
            if old {
                let _ = fs::remove_file(&path);
            }
            !old
        });
    }
}

/// Why a push is refused.
#[derive(Debug)]
pub(crate) enum PushError {
    Bad(String),
    /// Another push (or build) changed the prefix since the base revision.
    Conflict(String),
    /// Chunks the manifest names that no pack holds.
    Missing(String),
    /// The repository folder feeds this master.
    FolderFed(String),
    Busy(String),
    /// Every followed push is under way: a new one waits (503).
    Full(String),
    /// The pack is over [`MAX_PUSH_PACK`] bytes (413).
    TooLarge,
    /// The body ended early (the connection broke).
    Aborted,
    MassDelete(String),
    Internal(String),
}

impl PushError {
    /// The one line a push's progress shows for it (internal details stay in the log).
    fn one_line(&self) -> String {
        match self {
            PushError::Bad(m)
            | PushError::Conflict(m)
            | PushError::Missing(m)
            | PushError::FolderFed(m)
            | PushError::Busy(m)
            | PushError::Full(m)
            | PushError::MassDelete(m) => m.clone(),
            PushError::TooLarge => format!("a pack over {MAX_PUSH_PACK} bytes"),
            PushError::Aborted => "the upload broke off".into(),
            PushError::Internal(_) => "internal error (the master's log says more)".into(),
        }
    }
}

impl From<PushError> for ApiError {
    fn from(e: PushError) -> Self {
        let refused = |status, code, message| ApiError::Refused {
            status,
            code,
            message,
            retry_after: None,
        };
        match e {
            PushError::Bad(m) => ApiError::BadRequest(m),
            PushError::Conflict(m) => refused(StatusCode::CONFLICT, "push_conflict", m),
            PushError::Missing(m) => {
                refused(StatusCode::UNPROCESSABLE_ENTITY, "push_chunks_missing", m)
            }
            PushError::FolderFed(m) => refused(StatusCode::CONFLICT, "folder_fed", m),
            PushError::Busy(m) => refused(StatusCode::CONFLICT, "busy", m),
            PushError::Full(m) => ApiError::Busy(m),
            PushError::TooLarge => ApiError::PayloadTooLarge(MAX_PUSH_PACK as usize),
            PushError::Aborted => ApiError::BadRequest("could not read the request body".into()),
            PushError::MassDelete(m) => refused(StatusCode::CONFLICT, "mass_delete", m),
            PushError::Internal(m) => ApiError::Internal(m),
        }
    }
}

impl From<IndexLookupError> for PushError {
    fn from(e: IndexLookupError) -> Self {
        PushError::Internal(format!("{e:?}"))
    }
}

/// What an entry is, independent of the chunk table it indexes into.
#[derive(PartialEq, Eq, Debug)]
enum Shape {
    Dir(u32),
    File {
        size: u64,
        mode: u32,
        mtime_ns: i64,
        hash: Hash,
    },
}

fn shape(e: &Entry) -> Shape {
    match &e.kind {
        EntryKind::Dir(d) => Shape::Dir(d.mode),
        EntryKind::File(f) => Shape::File {
            size: f.size,
            mode: f.mode,
            mtime_ns: f.mtime_ns,
            hash: f.hash,
        },
    }
}

/// Whether a push to `prefix` replaces or depends on `e`: it is `prefix` or below it, or a
/// file where a folder above `prefix` goes (`None`: the whole tree). The folders above are
/// not compared: two pushes below one new folder both create it.
fn touches(e: &Entry, prefix: Option<&RelPath>) -> bool {
    match prefix {
        None => true,
        Some(p) => {
            e.path.is_within(p) || (p.is_within(&e.path) && matches!(e.kind, EntryKind::File(_)))
        }
    }
}

/// The entries of `index` a push to `prefix` replaces or depends on, by path.
fn region<'a>(index: Option<&'a Index>, prefix: Option<&RelPath>) -> Vec<(&'a str, Shape)> {
    index
        .map(|i| {
            i.entries
                .iter()
                .filter(|e| touches(e, prefix))
                .map(|e| (e.path.as_str(), shape(e)))
                .collect()
        })
        .unwrap_or_default()
}

fn is_empty_or_missing(dir: &Path) -> bool {
    match fs::read_dir(dir) {
        Ok(mut list) => list.next().is_none(),
        Err(_) => true,
    }
}

impl Master {
    /// `POST /api/v1/push/missing`. Blocking (stats staged packs).
    pub(crate) fn push_missing(
        &self,
        req: &PushMissingRequest,
    ) -> Result<PushMissingResponse, PushError> {
        if req.chunks.len() > MAX_PUSH_MISSING {
            return Err(PushError::Bad(format!(
                "at most {MAX_PUSH_MISSING} chunks per question"
            )));
        }
        let follow = push_id(req.push.as_deref())?;
        let prefix = match req.prefix.as_deref() {
            None | Some("") => None,
            Some(p) => Some(
                RelPath::new(p)
                    .map_err(|e| PushError::Bad(format!("prefix {p:?}: {e}")))?
                    .to_string(),
            ),
        };
        let staging = &self.inner.push;
        if req.chunks.is_empty() {
            staging.prune();
        }
        let current = self.current();
        let options = &self.inner.build_options;
        let missing: Vec<Hash> = {
            let held: HashSet<Hash> = current
                .as_ref()
                .map(|c| c.index.chunks.iter().map(|c| c.hash).collect())
                .unwrap_or_default();
            let staged: HashSet<Hash> = lock(&staging.packs)
                .values()
                .flatten()
                .map(|e| e.hash)
                .collect();
            req.chunks
                .iter()
                .filter(|h| !held.contains(h) && !staged.contains(h))
                .copied()
                .collect()
        };
        let revision = current.as_ref().map(|c| c.row.number);
        if let Some(id) = follow {
            staging
                .progress
                .asked(id, prefix.as_deref(), revision, &missing, now_ms())
                .map_err(|BookFull| {
                    PushError::Full(format!(
                        "the master follows {} pushes under way already; retry shortly",
                        crate::push_progress::MAX_PUSHES
                    ))
                })?;
            self.ui_changed();
        }
        Ok(PushMissingResponse {
            revision,
            chunker: current
                .as_ref()
                .map_or(options.chunker, |c| c.index.chunker),
            zstd_level: options.zstd_level,
            pack_target: options.pack_target.min(MAX_PUSH_PACK / 2),
            missing,
        })
    }

    /// `PUT /api/v1/push/packs/{hash}`, the blocking half of [`pack_handler`]: writes the
    /// pieces `body` brings into a temp file in the staging folder, hashing them on the way,
    /// until [`Piece::End`] (the queue closing without it: the upload broke off). Then checks the
    /// pack against `hash` and reads it back ([`verify_pack_file`]), fsyncs it and renames it
    /// into the staging folder. Whatever fails, the temp file is deleted and nothing is staged.
    pub(crate) fn stage_upload(
        &self,
        hash: Hash,
        mut body: mpsc::Receiver<Piece>,
    ) -> Result<StagedPack, PushError> {
        let staging = &self.inner.push;
        let io = |e: std::io::Error| PushError::Internal(format!("staging a pushed pack: {e}"));
        fs::create_dir_all(&staging.dir).map_err(io)?;
        let n = staging.temp_seq.fetch_add(1, Ordering::Relaxed);
        let temp = staging.dir.join(format!("{}.{n}.tmp", hash.to_hex()));
        let file = fs::File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(io)?;
        let staged = (|| {
            let mut out = BufWriter::with_capacity(UPLOAD_BUFFER, &file);
            let mut hasher = blake3::Hasher::new();
            let mut size = 0u64;
            loop {
                match body.blocking_recv() {
                    Some(Piece::Bytes(b)) => {
                        size += b.len() as u64;
                        if size > MAX_PUSH_PACK {
                            return Err(PushError::TooLarge);
                        }
                        hasher.update(&b);
                        out.write_all(&b).map_err(io)?;
                    }
                    Some(Piece::End) => break,
                    None => return Err(PushError::Aborted),
                }
            }
            out.flush().map_err(io)?;
            drop(out);
            let actual = Hash::from(hasher.finalize());
            if actual != hash {
                return Err(PushError::Bad(format!(
                    "pack {} arrived with hash {}: damaged in transit",
                    hash.short(),
                    actual.short()
                )));
            }
            let toc = verify_pack_file(&hash, &file, size)?;
            file.sync_all().map_err(io)?;
            fs::rename(&temp, staging.path(&hash)).map_err(io)?;
            hummel_store::sync_dir(&staging.dir)
                .map_err(|e| PushError::Internal(format!("staging a pushed pack: {e}")))?;
            Ok((toc, size))
        })();
        match staged {
            Ok((toc, size)) => {
                let chunks = toc.len();
                lock(&staging.packs).insert(hash, toc);
                lock(&staging.verified).insert(hash, Instant::now());
                Ok(StagedPack { chunks, size })
            }
            Err(e) => {
                let _ = fs::remove_file(&temp);
                Err(e)
            }
        }
    }

    /// Hashes again, in parallel, the staged packs that may hold chunks of `files` which
    /// `published` does not (a publish's candidates, before it takes the builds' lock). A
    /// pack that no longer hashes to its name is deleted from the staging folder (the next
    /// push uploads it again). Packs this process verified less than [`VERIFIED_FRESH`] ago
    /// are taken as they are. Returns the sizes of the packs that verified. Blocking.
    pub(crate) fn recheck_staged(
        &self,
        files: &[hummel_proto::api::PushFile],
        published: &HashSet<Hash>,
    ) -> Result<HashMap<Hash, u64>, PushError> {
        let staging = &self.inner.push;
        let wanted: HashSet<Hash> = files
            .iter()
            .flat_map(|f| &f.chunks)
            .filter(|h| !published.contains(h))
            .copied()
            .collect();
        let candidates: Vec<Hash> = lock(&staging.packs)
            .iter()
            .filter(|(_, toc)| toc.iter().any(|e| wanted.contains(&e.hash)))
            .map(|(p, _)| *p)
            .collect();
        let fresh: HashSet<Hash> = {
            let mut verified = lock(&staging.verified);
            verified.retain(|_, at| at.elapsed() < VERIFIED_FRESH);
            verified.keys().copied().collect()
        };
        let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
        // A pack gone meanwhile (a concurrent publish took it, or the prune) is left out: the
        // publish finds its chunks published, or reports them missing.
        let checked: Vec<(Hash, Result<u64, String>)> = candidates
            .par_iter()
            .filter_map(|p| {
                let path = staging.path(p);
                let check = match fs::metadata(&path) {
                    Err(e) if gone(&e) => return None,
                    Err(e) => Err(e.to_string()),
                    Ok(m) if fresh.contains(p) => Ok(m.len()),
                    Ok(m) => match hummel_store::hash_file(&path) {
                        Ok(actual) if actual == *p => Ok(m.len()),
                        Ok(actual) => Err(format!("it hashes to {} now", actual.short())),
                        Err(hummel_store::StoreError::Io { source, .. }) if gone(&source) => {
                            return None;
                        }
                        Err(e) => Err(e.to_string()),
                    },
                };
                Some((*p, check))
            })
            .collect();
        let mut sizes = HashMap::new();
        let mut damaged = Vec::new();
        for (p, check) in checked {
            match check {
                Ok(size) => {
                    sizes.insert(p, size);
                }
                Err(why) => {
                    tracing::warn!(pack = %p.short(), why, "a staged pack is damaged; deleted");
                    lock(&staging.packs).remove(&p);
                    let _ = fs::remove_file(staging.path(&p));
                    damaged.push(p);
                }
            }
        }
        if let Some(first) = damaged.first() {
            return Err(PushError::Missing(format!(
                "{} staged packs were damaged on the master's disk since they were uploaded \
                 (first {}); push again to upload them again",
                damaged.len(),
                first.short()
            )));
        }
        Ok(sizes)
    }

    /// `POST /api/v1/push/publish` (see the module documentation). Blocking.
    pub(crate) fn push_publish(
        &self,
        req: &PushPublishRequest,
    ) -> Result<PushPublishResponse, PushError> {
        if req.message.as_deref().is_some_and(|m| !valid_message(m)) {
            return Err(PushError::Bad(format!(
                "message: at most {} bytes, no control characters but newlines and tabs",
                hummel_proto::api::MAX_MESSAGE_LEN
            )));
        }
        let rel = |s: &str| RelPath::new(s).map_err(|e| PushError::Bad(format!("path {s:?}: {e}")));
        let prefix = match req.prefix.as_deref() {
            None | Some("") => None,
            Some(p) => Some(rel(p)?),
        };
        let place = |p: RelPath| match &prefix {
            Some(pre) => pre.join(&p),
            None => p,
        };
        let repo = &self.inner.config.repo;
        if !fed_by_pushes(&self.inner.config.data) && !is_empty_or_missing(repo) {
            return Err(PushError::FolderFed(format!(
                "this master builds its repository folder {}; pushes need a master whose \
                 folder is empty (a folder build would undo them)",
                repo.display()
            )));
        }
        let started = Instant::now();
        // Hashing the staged packs again is the slow part of a publish: done before the lock.
        let rechecked = if req.dry_run {
            HashMap::new()
        } else {
            let published: HashSet<Hash> = self
                .current()
                .map(|c| c.index.chunks.iter().map(|c| c.hash).collect())
                .unwrap_or_default();
            self.recheck_staged(&req.files, &published)?
        };

        let book = self.builds_guard();
        let locked = Instant::now();
        if self.stopping() {
            return Err(PushError::Busy("the master is stopping".into()));
        }
        if let Some(id) = book.running {
            return Err(PushError::Busy(format!(
                "build {id} is running; push once it finished"
            )));
        }
        let current = self.current();
        let current_number = current.as_ref().map(|c| c.row.number);
        let current_index = current.as_ref().map(|c| &*c.index);
        if req.base != current_number {
            let base = match req.base {
                Some(n) => Some(self.loaded_revision(Some(n)).map_err(|_| {
                    PushError::Conflict(format!(
                        "the push read revision {n}, which is no longer stored; push again"
                    ))
                })?),
                None => None,
            };
            if region(base.as_ref().map(|b| &*b.index), prefix.as_ref())
                != region(current_index, prefix.as_ref())
            {
                let what = prefix
                    .as_ref()
                    .map_or("the repository".into(), |p| p.to_string());
                return Err(PushError::Conflict(format!(
                    "someone else pushed to {what} since revision {} (now {}); push again to \
                     publish on top of it",
                    req.base.map_or("none".into(), |n| n.to_string()),
                    current_number.map_or("none".into(), |n| n.to_string()),
                )));
            }
        }

        // Where every chunk can come from: the current revision, or a staged pack.
        let published: HashMap<Hash, ChunkLocation> = current_index
            .map(|i| i.chunks.iter().map(|c| (c.hash, *c)).collect())
            .unwrap_or_default();
        let staged: HashMap<Hash, (Hash, PackEntry)> = lock(&self.inner.push.packs)
            .iter()
            .flat_map(|(p, toc)| toc.iter().map(move |e| (e.hash, (*p, *e))))
            .collect();

        // The new entries: what is outside the prefix, the prefix's folders, the pushed tree.
        let mut entries: Vec<Entry> = Vec::new();
        let mut files: Vec<(RelPath, FileEntry, Vec<Hash>)> = Vec::new();
        if let Some(index) = current_index {
            for e in &index.entries {
                let outside = match &prefix {
                    None => false,
                    Some(p) => !e.path.is_within(p),
                };
                match &e.kind {
                    EntryKind::Dir(_) if outside => entries.push(e.clone()),
                    EntryKind::File(f)
                        if outside && !prefix.as_ref().is_some_and(|p| p.is_within(&e.path)) =>
                    {
                        let hashes = f
                            .chunks
                            .iter()
                            .map(|&i| index.chunks[i as usize].hash)
                            .collect();
                        files.push((e.path.clone(), f.clone(), hashes));
                    }
                    _ => {}
                }
            }
        }
        let mut dirs: BTreeSet<String> =
            entries.iter().map(|e| e.path.as_str().to_owned()).collect();
        if let Some(p) = &prefix {
            let mut up = Some(p.clone());
            while let Some(d) = up {
                if dirs.insert(d.as_str().to_owned()) {
                    entries.push(Entry {
                        path: d.clone(),
                        kind: EntryKind::Dir(DirEntry { mode: DIR_MODE }),
                    });
                }
                up = d.parent();
            }
        }
        for d in &req.dirs {
            let path = place(rel(&d.path)?);
            if dirs.insert(path.as_str().to_owned()) {
                entries.push(Entry {
                    path,
                    kind: EntryKind::Dir(DirEntry { mode: d.mode }),
                });
            }
        }
        for f in &req.files {
            let path = place(rel(&f.path)?);
            files.push((
                path,
                FileEntry {
                    size: f.size,
                    mode: f.mode,
                    mtime_ns: f.mtime_ns,
                    hash: f.hash,
                    chunks: Vec::new(),
                },
                f.chunks.clone(),
            ));
        }

        // Chunk table, pack numbers for the staged packs used.
        let mut next_number = read(&self.inner.catalog.packs).next_number;
        let known_packs: HashMap<u32, PackInfo> = read(&self.inner.catalog.packs).by_number.clone();
        let by_hash: HashMap<Hash, u32> =
            known_packs.values().map(|p| (p.hash, p.number)).collect();
        let mut new_packs: Vec<PackInfo> = Vec::new();
        let mut numbered: HashMap<Hash, u32> = HashMap::new();
        let mut chunks: Vec<ChunkLocation> = Vec::new();
        let mut positions: HashMap<Hash, u32> = HashMap::new();
        let mut new_chunks: Vec<ChunkLocation> = Vec::new();
        let mut missing: Vec<Hash> = Vec::new();
        for (path, mut file, hashes) in files {
            let mut total = 0u64;
            let mut list = Vec::with_capacity(hashes.len());
            for h in hashes {
                if let Some(&pos) = positions.get(&h) {
                    total += u64::from(chunks[pos as usize].len);
                    list.push(pos);
                    continue;
                }
                let loc = if let Some(loc) = published.get(&h) {
                    *loc
                } else if let Some((pack, e)) = staged.get(&h) {
                    let number = match numbered.get(pack) {
                        Some(&n) => n,
                        None => {
                            let n = match by_hash.get(pack) {
                                Some(&n) => n,
                                None => {
                                    let n = next_number;
                                    next_number += 1;
                                    let size = fs::metadata(self.inner.push.path(pack))
                                        .map_err(|e| PushError::Internal(e.to_string()))?
                                        .len();
                                    new_packs.push(PackInfo {
                                        number: n,
                                        hash: *pack,
                                        size,
                                    });
                                    n
                                }
                            };
                            numbered.insert(*pack, n);
                            n
                        }
                    };
                    let loc = ChunkLocation {
                        hash: h,
                        pack: number,
                        offset: e.offset,
                        stored_len: e.stored_len,
                        len: e.len,
                        codec: e.codec,
                    };
                    new_chunks.push(loc);
                    loc
                } else {
                    missing.push(h);
                    continue;
                };
                total += u64::from(loc.len);
                positions.insert(h, chunks.len() as u32);
                list.push(chunks.len() as u32);
                chunks.push(loc);
            }
            if missing.is_empty() && total != file.size {
                return Err(PushError::Bad(format!(
                    "{path}: its chunks hold {total} bytes, not its size {}",
                    file.size
                )));
            }
            file.chunks = list;
            entries.push(Entry {
                path,
                kind: EntryKind::File(file),
            });
        }
        if let Some(first) = missing.first().filter(|_| !req.dry_run) {
            return Err(PushError::Missing(format!(
                "{} chunks of the pushed tree are in no pack the master holds (first {}); \
                 push again to upload them",
                missing.len(),
                first.short()
            )));
        }
        entries.sort_by(|a, b| a.path.as_str().cmp(b.path.as_str()));
        if entries.windows(2).any(|w| w[0].path == w[1].path) {
            return Err(PushError::Bad("the pushed tree names a path twice".into()));
        }
        let used: BTreeSet<u32> = chunks.iter().map(|c| c.pack).collect();
        let fresh: HashMap<u32, PackInfo> = new_packs.iter().map(|p| (p.number, *p)).collect();
        let packs = used
            .into_iter()
            .map(|n| {
                fresh
                    .get(&n)
                    .or_else(|| known_packs.get(&n))
                    .copied()
                    .ok_or_else(|| PushError::Internal(format!("pack {n} is not in the table")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        new_packs.retain(|p| packs.iter().any(|q| q.number == p.number));
        let index = Index {
            revision: 0,
            created_unix: 0,
            chunker: current_index.map_or(self.inner.build_options.chunker, |i| i.chunker),
            root: None,
            entries,
            chunks,
            packs,
            info: current_index.map(|i| i.info.clone()).unwrap_or_default(),
        };
        if missing.is_empty() {
            index
                .validate()
                .map_err(|e| PushError::Bad(format!("the pushed tree: {e}")))?;
        }
        let summary: ChangeSummary = changes(current_index, &index).summary();
        let unchanged = current_index.is_some_and(|c| {
            c.entries.len() == index.entries.len()
                && c.entries
                    .iter()
                    .zip(&index.entries)
                    .all(|(a, b)| a.path == b.path && shape(a) == shape(b))
        });

        let mut mass_delete_confirmed = false;
        if let Err(refusal) = crate::build::check_mass_delete(
            repo,
            current_index,
            index.files().map(|(p, f)| (p, f.size)),
            false,
        ) {
            if current_index.is_some() && !req.allow_mass_delete {
                return Err(PushError::MassDelete(format!(
                    "refusing the push: {}; re-run with --allow-mass-delete to publish it anyway",
                    refusal.finding().replace("the build removes", "it removes")
                )));
            }
            mass_delete_confirmed = current_index.is_some();
        }
        if req.dry_run || unchanged {
            return Ok(PushPublishResponse {
                revision: None,
                current: current_number,
                changes: summary,
            });
        }
        // A repack under way stops and publishes nothing.
        self.inner.builds.interrupt(&book);
        // In parallel: each is a rename and two fsyncs (the file's, its store folder's).
        new_packs.par_iter().try_for_each(|p| {
            let path = self.inner.push.path(&p.hash);
            let store = &self.inner.store;
            match rechecked.get(&p.hash) {
                Some(&size) => store.adopt(&path, &p.hash, size),
                // A revision published since the recheck left this pack to the push: hashed
                // here.
                None => {
                    let file =
                        fs::File::open(&path).map_err(|e| PushError::Internal(e.to_string()))?;
                    store.commit(TempBlob { file, path }, &p.hash)
                }
            }
            .map_err(|e| PushError::Internal(e.to_string()))?;
            lock(&self.inner.push.packs).remove(&p.hash);
            Ok::<_, PushError>(())
        })?;
        fs::write(self.inner.config.data.join(PUSHED_MARKER), b"")
            .map_err(|e| PushError::Internal(format!("marking the data folder: {e}")))?;
        let message = req
            .message
            .clone()
            .filter(|m| !m.trim().is_empty())
            .unwrap_or_else(|| {
                format!(
                    "push to {}",
                    prefix.as_ref().map_or("/".into(), |p| p.to_string())
                )
            });
        new_chunks.sort_by_key(|c| (c.pack, c.offset));
        let number = self
            .publish(
                index,
                &NewRevision {
                    build_id: None,
                    build_started_unix: crate::now_unix(),
                    new_packs: &new_packs,
                    pack_level: self.inner.build_options.zstd_level,
                    relevelled_packs: &[],
                    new_chunks: &new_chunks,
                    moved_chunks: &[],
                    mass_delete_confirmed,
                    message: Some(message),
                    rollback_of: None,
                },
            )
            .map_err(|e| PushError::Internal(e.to_string()))?;
        drop(book);
        tracing::info!(
            revision = number,
            prefix = ?prefix.as_ref().map(|p| p.as_str()),
            packs = new_packs.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            locked_ms = locked.elapsed().as_millis() as u64,
            "push published"
        );
        self.start_maintenance();
        Ok(PushPublishResponse {
            revision: Some(number),
            current: Some(number),
            changes: summary,
        })
    }
}

impl Bounded for PushMissingRequest {
    fn limit(_: &Master) -> usize {
        MAX_PUSH_MISSING * 70 + 1024
    }
}

impl Bounded for PushPublishRequest {
    fn limit(_: &Master) -> usize {
        MAX_PUSH_MANIFEST
    }
}

/// `POST /api/v1/push/missing` (write token).
pub(crate) async fn missing_handler(
    _: WriteAccess,
    State(master): State<Master>,
    ApiJson(req): ApiJson<PushMissingRequest>,
) -> Result<Json<PushMissingResponse>, ApiError> {
    Ok(Json(blocking(move || master.push_missing(&req)).await??))
}

/// The push a request belongs to, if it names a well-formed one.
fn push_id(id: Option<&str>) -> Result<Option<&str>, PushError> {
    match id {
        Some(id) if !valid_push_id(id) => Err(PushError::Bad(format!(
            "push id: {} lowercase hex characters",
            hummel_proto::api::PUSH_ID_LEN
        ))),
        id => Ok(id),
    }
}

/// One piece of an upload on its way to the thread writing it.
pub(crate) enum Piece {
    Bytes(Bytes),
    /// The body is complete.
    End,
}

/// A pack [`Master::stage_upload`] staged.
#[derive(Debug)]
pub(crate) struct StagedPack {
    pub chunks: usize,
    pub size: u64,
}

/// Checks the pack in `file` (`size` bytes, named `hash`) by reading it back: its table of
/// contents, then every chunk, in file order, decodes to its id (within [`MAX_CHUNK_SIZE`],
/// one chunk in memory at a time). CPU-bound.
pub(crate) fn verify_pack_file(
    hash: &Hash,
    file: &fs::File,
    size: u64,
) -> Result<Vec<PackEntry>, PushError> {
    let bad = |what: String| PushError::Bad(format!("pack {}: {what}", hash.short()));
    let toc = read_toc(file, size).map_err(|e| bad(e.to_string()))?;
    let mut order: Vec<&PackEntry> = toc.iter().collect();
    order.sort_by_key(|e| e.offset);
    let mut reader = file;
    let mut stored = Vec::new();
    let mut scratch = Vec::new();
    for e in order {
        if e.stored_len > MAX_CHUNK_SIZE || e.len > MAX_CHUNK_SIZE {
            return Err(bad(format!(
                "chunk {} declares {} bytes, over {MAX_CHUNK_SIZE}",
                e.hash.short(),
                e.len.max(e.stored_len)
            )));
        }
        stored.resize(e.stored_len as usize, 0);
        reader
            .seek(SeekFrom::Start(e.offset))
            .and_then(|_| reader.read_exact(&mut stored))
            .map_err(|err| PushError::Internal(format!("reading an uploaded pack back: {err}")))?;
        hummel_core::codec::decode_chunk_into(e.codec, &stored, e.len, &e.hash, &mut scratch)
            .map_err(|err| {
                bad(format!(
                    "chunk {} does not decode to its id: {err}",
                    e.hash.short()
                ))
            })?;
    }
    Ok(toc)
}

/// The query of a pack upload.
#[derive(Deserialize)]
pub(crate) struct PackQuery {
    /// The push uploading it ([`valid_push_id`]).
    push: Option<String>,
}

/// `PUT /api/v1/push/packs/{hash}[?push=ID]` (write token): the body is the pack, at most
/// [`MAX_PUSH_PACK`] bytes, streamed to [`Master::stage_upload`] on a blocking thread.
pub(crate) async fn pack_handler(
    _: WriteAccess,
    State(master): State<Master>,
    UrlPath(hash): UrlPath<String>,
    query: Result<Query<PackQuery>, QueryRejection>,
    req: Request,
) -> Result<StatusCode, ApiError> {
    let hash: Hash = hash
        .parse()
        .map_err(|_| ApiError::BadRequest("not a pack hash".into()))?;
    let Query(q) = query.map_err(|e| ApiError::BadRequest(format!("bad query: {e}")))?;
    let follow = push_id(q.push.as_deref())?.map(str::to_string);
    let metrics = &master.inner.metrics;
    let refuse = |e: PushError| {
        let counter = match e {
            PushError::TooLarge => &metrics.bodies_refused,
            _ => &metrics.push_packs_refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        ApiError::from(e)
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_PUSH_PACK) {
        return Err(refuse(PushError::TooLarge));
    }
    if let Some(id) = &follow {
        master.inner.push.progress.heard(id, now_ms());
    }
    let (queue, pieces) = mpsc::channel(UPLOAD_QUEUE);
    let writer = {
        let master = master.clone();
        tokio::task::spawn_blocking(move || master.stage_upload(hash, pieces))
    };
    let mut body = req.into_body().into_data_stream();
    let mut size = 0u64;
    let read: Result<(), PushError> = loop {
        match body.next().await {
            None => {
                // The writer may have quit already; its answer says why.
                let _ = queue.send(Piece::End).await;
                break Ok(());
            }
            Some(Err(_)) => break Err(PushError::Aborted),
            Some(Ok(bytes)) => {
                size += bytes.len() as u64;
                if size > MAX_PUSH_PACK {
                    break Err(PushError::TooLarge);
                }
                if queue.send(Piece::Bytes(bytes)).await.is_err() {
                    break Ok(());
                }
            }
        }
    };
    // Without `End` the writer deletes what it wrote.
    drop(queue);
    let staged = writer
        .await
        .map_err(|e| ApiError::Internal(format!("blocking task failed: {e}")))?;
    read.map_err(refuse)?;
    let staged = staged.map_err(refuse)?;
    metrics.push_packs_staged.fetch_add(1, Ordering::Relaxed);
    metrics
        .push_bytes_staged
        .fetch_add(staged.size, Ordering::Relaxed);
    if let Some(id) = &follow {
        master
            .inner
            .push
            .progress
            .received(id, hash, staged.chunks as u64, staged.size, now_ms());
        master.ui_changed();
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/push/publish` (write token).
pub(crate) async fn publish_handler(
    _: WriteAccess,
    State(master): State<Master>,
    ApiJson(req): ApiJson<PushPublishRequest>,
) -> Result<Json<PushPublishResponse>, ApiError> {
    let follow = push_id(req.push.as_deref())?.map(str::to_string);
    if let Some(id) = &follow {
        master.inner.push.progress.publishing(id, now_ms());
        master.ui_changed();
    }
    let m = master.clone();
    let published = blocking(move || m.push_publish(&req)).await?;
    if let Some(id) = &follow {
        let outcome = match &published {
            Ok(r) => Ok(r.revision),
            Err(e) => Err(e.one_line()),
        };
        master.inner.push.progress.finished(id, outcome, now_ms());
        master.ui_changed();
    }
    Ok(Json(published?))
}
