//! The background repack: recompresses the current revision's chunks at a higher zstd level
//! and publishes the same tree again with its chunks in the new packs, the way `git gc`
//! repacks.
//!
//! Builds compress at level 3 so that publishing stays fast; levels 13–15 store ~6–7 % less but
//! compress ~17x slower, and decompression speed does not suffer. With `repack_level` set
//! (`hummel master --repack-level N`, 0 = off), the maintenance thread (`crate::maintenance`)
//! runs one pass after every build and once when the background task starts:
//!
//! 1. Every chunk of the current revision in a pack written below the level (the `zstd_level`
//!    of the `packs` table) is read from the master's store, decoded and verified
//!    ([`decode_chunk`]), recompressed by one [`ChunkCompressor`] on this one thread, and
//!    written through the build's pack writer ([`build::write_packs`]: verify, fsync, rename).
//! 2. A new revision with the same entries (paths, hashes, sizes, modes, mtimes) but the new
//!    chunk locations is published through the build's publishing code ([`Master::publish`]);
//!    the chunk table points at the new packs from then on, so later builds reuse them.
//!    The revision keeps its source's `build_started_unix`: the files were read then. Its
//!    number follows the builds' rule ([`crate::revision::next_number`]).
//!
//! A build always wins: every build start moves the build epoch (`crate::builds`); the pass
//! checks it before each chunk and, holding the builds' start lock, before publishing. A stopped pass publishes nothing; packs
//! it already sealed stay in the store unreferenced. The pass runs again after the build.
//!
//! Costs: one core while it runs. The superseded packs stay referenced by the older revision
//! until the garbage collection (`crate::gc`) expires it, `gc_grace` after the pass published:
//! meanwhile the master's store, and slaves that replicate the new packs, hold both.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io;
use std::panic::AssertUnwindSafe;
#[cfg(test)]
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use hummel_core::codec::{ChunkCompressor, ChunkError, DEFAULT_ZSTD_LEVEL, decode_chunk};
use hummel_core::{ChunkLocation, Hash, PackInfo};
use hummel_proto::api::RepackStatus;

use crate::build::{self, BuildError, StoredChunk};
use crate::master::{Master, NewRevision};
use crate::{lock, read};

/// Why a repack pass failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RepackError {
    #[error("cannot read pack {hash}: {source}")]
    ReadPack { hash: Hash, source: io::Error },
    #[error("pack {pack} is too short for chunk {hash}")]
    Truncated { pack: u32, hash: Hash },
    #[error("{0}")]
    Chunk(#[from] ChunkError),
    #[error("{0}")]
    Build(#[from] BuildError),
    #[error("the repack thread panicked")]
    Panicked,
}

/// What one pass did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RepackOutcome {
    /// Every pack of the current revision is at the level already (or there is no revision).
    NothingToDo,
    /// A build is running; the pass runs after it.
    Deferred,
    /// A build started during the pass; nothing was published.
    Stopped,
    /// A new revision was published.
    Published {
        revision: u64,
        packs: u64,
        bytes_before: u64,
        bytes_after: u64,
    },
}

/// The repack's thread control and counters.
#[derive(Default)]
pub(crate) struct Repacker {
    /// A pass is running (the `hummel_repack_running` gauge).
    pub running: AtomicBool,
    /// Passes that published a revision.
    pub runs: AtomicU64,
    /// Passes stopped by a build.
    pub stopped: AtomicU64,
    /// Passes that failed.
    pub failures: AtomicU64,
    /// Stored bytes before minus after, over all published passes.
    pub bytes_saved: AtomicU64,
    /// Packs sealed by passes (published or not).
    pub packs_written: AtomicU64,
    /// The last revision a pass published.
    pub last_revision: AtomicU64,
    /// Called before each chunk (tests start a build from it).
    #[cfg(test)]
    pub before_chunk: Mutex<Option<Box<dyn FnMut() + Send>>>,
}

impl Master {
    /// Runs one pass at `level` on the calling thread (the maintenance thread), logs and
    /// counts the outcome. Never panics.
    pub(crate) fn repack_pass(&self, level: i32) {
        let repacker = &self.inner.upkeep.repacker;
        repacker.running.store(true, Ordering::Relaxed);
        let started = Instant::now();
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| self.repack_once(level)))
            .unwrap_or(Err(RepackError::Panicked));
        repacker.running.store(false, Ordering::Relaxed);
        let secs = started.elapsed().as_secs_f64();
        match result {
            Ok(RepackOutcome::Published {
                revision,
                packs,
                bytes_before,
                bytes_after,
            }) => {
                repacker.runs.fetch_add(1, Ordering::Relaxed);
                let saved = bytes_before.saturating_sub(bytes_after);
                repacker.bytes_saved.fetch_add(saved, Ordering::Relaxed);
                repacker.last_revision.store(revision, Ordering::Relaxed);
                tracing::info!(
                    revision,
                    level,
                    packs,
                    bytes_before,
                    bytes_after,
                    secs = format!("{secs:.1}"),
                    "repack published revision {revision}"
                );
            }
            Ok(RepackOutcome::Stopped) => {
                repacker.stopped.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    secs = format!("{secs:.1}"),
                    "repack stopped by a build; it runs again after the build"
                );
            }
            Ok(RepackOutcome::NothingToDo | RepackOutcome::Deferred) => {}
            Err(e) => {
                repacker.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "repack failed");
            }
        }
    }

    /// The repack's part of the status; `None` when it is off.
    pub(crate) fn repack_status(&self) -> Option<RepackStatus> {
        let level = self.inner.config.repack_level;
        if level == 0 {
            return None;
        }
        let r = &self.inner.upkeep.repacker;
        let last = r.last_revision.load(Ordering::Relaxed);
        Some(RepackStatus {
            level,
            running: r.running.load(Ordering::Relaxed),
            runs: r.runs.load(Ordering::Relaxed),
            bytes_saved: r.bytes_saved.load(Ordering::Relaxed),
            last_revision: (last > 0).then_some(last),
        })
    }

    /// One pass at `level`, on the calling thread. Blocking and CPU-bound (one core).
    pub(crate) fn repack_once(&self, level: i32) -> Result<RepackOutcome, RepackError> {
        // No collection deletes files of the store while this pass writes packs to it.
        let _exclusive = lock(&self.inner.upkeep.maintenance.lock);
        let epoch = self.inner.builds.epoch();
        if self.build_running() {
            return Ok(RepackOutcome::Deferred);
        }
        let Some(source) = self.current() else {
            return Ok(RepackOutcome::NothingToDo);
        };
        let (low, next_number) = {
            let t = read(&self.inner.catalog.packs);
            let low: BTreeSet<u32> = source
                .index
                .packs
                .iter()
                .filter(|p| {
                    t.levels
                        .get(&p.number)
                        .copied()
                        .unwrap_or(DEFAULT_ZSTD_LEVEL)
                        < level
                })
                .map(|p| p.number)
                .collect();
            (low, t.next_number)
        };
        if low.is_empty() {
            return Ok(RepackOutcome::NothingToDo);
        }
        let mut todo: Vec<ChunkLocation> = source
            .index
            .chunks
            .iter()
            .filter(|c| low.contains(&c.pack))
            .copied()
            .collect();
        todo.sort_by_key(|c| (c.pack, c.offset));
        let bytes_before: u64 = todo.iter().map(|c| u64::from(c.stored_len)).sum();
        tracing::info!(
            revision = source.row.number,
            level,
            packs = low.len(),
            chunks = todo.len(),
            bytes = bytes_before,
            "repack started"
        );

        let stop = || self.inner.builds.epoch() != epoch;
        let repacker = &self.inner.upkeep.repacker;
        let (tx, rx) = sync_channel::<StoredChunk>(build::CHANNEL_DEPTH);
        let (fed, written) = std::thread::scope(|scope| {
            let writer = std::thread::Builder::new()
                .name("hummel-repack-writer".into())
                .spawn_scoped(scope, || {
                    build::write_packs(
                        rx,
                        &self.inner.store,
                        next_number,
                        self.inner.build_options.pack_target,
                        &repacker.packs_written,
                    )
                });
            let writer = match writer {
                Ok(w) => w,
                Err(e) => {
                    return (
                        Err(RepackError::Build(BuildError::PackWrite(e))),
                        Ok(build::Written::default()),
                    );
                }
            };
            let fed = self.feed(&source.index, &todo, level, &tx, &stop);
            drop(tx);
            (fed, writer.join().unwrap_or(Err(BuildError::Panicked)))
        });
        let mut written = match (fed, written) {
            (Ok(true), Ok(w)) => w,
            (Ok(false), _) => return Ok(RepackOutcome::Stopped),
            // The writer's own error explains why the feeder saw it stop.
            (Err(RepackError::Build(BuildError::WriterStopped)), Err(e)) => return Err(e.into()),
            (Err(e), _) => return Err(e),
            (Ok(true), Err(e)) => return Err(e.into()),
        };

        // A pack of chunks that stay as they were (incompressible, stored raw at both levels)
        // comes out byte for byte the same, under the same hash: it keeps its number, and its
        // recorded level rises, since its bytes are what this level writes.
        let (fresh, relevelled) = {
            let t = read(&self.inner.catalog.packs);
            let mut renumber = HashMap::new();
            let mut fresh = Vec::new();
            for p in written.packs.drain(..) {
                match t.by_hash.get(&p.hash) {
                    Some(&n) => {
                        renumber.insert(p.number, n);
                    }
                    None => fresh.push(p),
                }
            }
            for c in written.chunks.values_mut() {
                if let Some(&n) = renumber.get(&c.pack) {
                    c.pack = n;
                }
            }
            let mut relevelled: Vec<u32> = renumber.into_values().collect();
            relevelled.sort_unstable();
            (fresh, relevelled)
        };
        let mut index = (*source.index).clone();
        for c in &mut index.chunks {
            if let Some(moved) = written.chunks.get(&c.hash) {
                *c = *moved;
            }
        }
        let new_packs: HashMap<u32, PackInfo> = fresh.iter().map(|p| (p.number, *p)).collect();
        let used: BTreeSet<u32> = index.chunks.iter().map(|c| c.pack).collect();
        index.packs = used
            .into_iter()
            .map(|n| {
                new_packs
                    .get(&n)
                    .or_else(|| source.index.pack(n))
                    .copied()
                    .ok_or(BuildError::MissingPack(n))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut moved: Vec<ChunkLocation> = written.chunks.values().copied().collect();
        moved.sort_by_key(|c| (c.pack, c.offset));
        let bytes_after: u64 = moved.iter().map(|c| u64::from(c.stored_len)).sum();

        // Holding the builds' start lock, so that no build starts (and reads the current
        // revision) between the check and the publication.
        let book = self.builds_guard();
        let current = self.current().map(|c| c.row.number);
        if book.running.is_some()
            || self.inner.builds.epoch() != epoch
            || current != Some(source.row.number)
        {
            return Ok(RepackOutcome::Stopped);
        }
        let revision = self.publish(
            index,
            &NewRevision {
                build_id: None,
                build_started_unix: source.row.build_started_unix,
                new_packs: &fresh,
                pack_level: level,
                relevelled_packs: &relevelled,
                new_chunks: &[],
                moved_chunks: &moved,
                // The same tree: a client coming from before the build meets the same deletes.
                mass_delete_confirmed: source.row.mass_delete_confirmed,
                message: None,
                rollback_of: None,
            },
        )?;
        drop(book);
        Ok(RepackOutcome::Published {
            revision,
            packs: (fresh.len() + relevelled.len()) as u64,
            bytes_before,
            bytes_after,
        })
    }

    /// Reads, verifies and recompresses `todo` (sorted by pack) into `tx`. `Ok(false)` when
    /// `stop` said so.
    fn feed(
        &self,
        index: &hummel_core::Index,
        todo: &[ChunkLocation],
        level: i32,
        tx: &std::sync::mpsc::SyncSender<StoredChunk>,
        stop: &dyn Fn() -> bool,
    ) -> Result<bool, RepackError> {
        let mut compressor = ChunkCompressor::new(level).map_err(BuildError::Compressor)?;
        let mut pack: Option<(u32, Vec<u8>)> = None;
        for c in todo {
            #[cfg(test)]
            if let Some(hook) = lock(&self.inner.upkeep.repacker.before_chunk).as_mut() {
                hook();
            }
            if stop() {
                return Ok(false);
            }
            let bytes = match &pack {
                Some((n, bytes)) if *n == c.pack => bytes,
                _ => {
                    let info = index.pack(c.pack).ok_or(BuildError::MissingPack(c.pack))?;
                    let path = self.inner.store.path(&info.hash);
                    let bytes = fs::read(&path).map_err(|source| RepackError::ReadPack {
                        hash: info.hash,
                        source,
                    })?;
                    &pack.insert((c.pack, bytes)).1
                }
            };
            let start = usize::try_from(c.offset).unwrap_or(usize::MAX);
            let stored = start
                .checked_add(c.stored_len as usize)
                .and_then(|end| bytes.get(start..end))
                .ok_or(RepackError::Truncated {
                    pack: c.pack,
                    hash: c.hash,
                })?;
            let plain = decode_chunk(c.codec, stored, c.len, &c.hash)?;
            let (codec, stored) = compressor.compress(&plain);
            tx.send(StoredChunk {
                hash: c.hash,
                codec,
                stored,
                len: c.len,
            })
            .map_err(|_| BuildError::WriterStopped)?;
        }
        Ok(true)
    }
}
