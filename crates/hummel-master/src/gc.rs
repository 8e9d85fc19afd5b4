//! Garbage collection of packs: what no kept revision references is deleted, from the master's
//! store and, through `SlaveDirective::drop`, from the slaves.
//!
//! Which revisions are kept, and why ([`retention`], pure):
//! - the newest `keep_revisions` builds, each in its latest form (a repack's revision is the
//!   same tree as the build before it, so it replaces that build's revision rather than
//!   counting as one more);
//! - every revision superseded less than `gc_grace` ago: a client that fetched its index just
//!   before may still be downloading its packs.
//!
//! A pack is garbage when no kept revision lists it. Nothing a client does keeps a pack: a
//! locate used to (each located pack stayed a grace period longer), so anyone calling the open
//! `locate` once per grace period kept every pack forever. The revisions kept by the rule above
//! are what a sync needs: one that fetched its index just before the revision was superseded
//! has `gc_grace` to finish (hence "make the grace longer than the longest sync"). A pass
//! ([`Master::collect_garbage`]):
//! 1. deletes the index files of the revisions no longer kept (their history rows stay; asking
//!    for one answers `no_such_revision`, and a client holding one gets a whole index instead
//!    of a delta);
//! 2. marks the packs collected and deletes their chunk and replica rows in one transaction
//!    ([`crate::db::Db::collect`]), then forgets them in memory: each slave holding one now
//!    holds a hash the master does not know, which its next directive tells it to drop;
//! 3. deletes their files, and any other file of the store that is no pack of the table (a
//!    pass the master crashed in, a repack stopped by a build).
//!
//! A pass runs on the maintenance thread after the repack (`crate::maintenance`) and holds the
//! builds' start lock throughout: no build reads the chunk table, and no pack is written, while it
//! decides and deletes. With a build running it does nothing; the build's end runs it again.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hummel_core::PackInfo;
use hummel_proto::api::{GcStatus, RetentionReason};

use crate::db::RevisionRow;
use crate::error::MasterError;
use crate::master::Master;
use crate::revision::{self, LoadedRevision};
use crate::{lock, now_unix, read, write};

/// The revisions a collection at `now_unix` keeps, from `history` (oldest first)
/// ([`retention`] without rollbacks or pins).
#[cfg(test)]
pub(crate) fn kept_revisions(
    history: &[RevisionRow],
    keep: u32,
    grace_s: u64,
    now_unix: i64,
) -> BTreeSet<u64> {
    let none = BTreeSet::new();
    retention(history, keep, grace_s, now_unix, &none, &none)
        .into_keys()
        .collect()
}

/// Why a collection at `now_unix` keeps each revision of `history` (oldest first) it keeps:
/// the current one; the last revision of each of the newest `keep` builds (a revision without
/// a build, the repack's, belongs to the build before it; a rollback in `rollbacks` counts as
/// a build of its own); every revision whose successor was published less than `grace_s`
/// seconds ago; and the revisions in `pinned` (clients reported they are pinned to them).
pub(crate) fn retention(
    history: &[RevisionRow],
    keep: u32,
    grace_s: u64,
    now_unix: i64,
    rollbacks: &BTreeSet<u64>,
    pinned: &BTreeSet<u64>,
) -> BTreeMap<u64, Vec<RetentionReason>> {
    let mut kept: BTreeMap<u64, Vec<RetentionReason>> = BTreeMap::new();
    let mut keep_for = |n: u64, why: RetentionReason| {
        let reasons = kept.entry(n).or_default();
        if !reasons.contains(&why) {
            reasons.push(why);
        }
    };
    if let Some(last) = history.last() {
        keep_for(last.number, RetentionReason::Current);
    }
    // The last revision of each build, newest first.
    let mut builds = 0u32;
    let mut in_build = false;
    for row in history.iter().rev() {
        if !in_build {
            if builds >= keep.max(1) {
                break;
            }
            keep_for(row.number, RetentionReason::Recent);
            builds += 1;
            in_build = true;
        }
        // The repack's revisions belong to the build revision below them.
        if row.build_id.is_some() || rollbacks.contains(&row.number) {
            in_build = false;
        }
    }
    let cutoff = now_unix.saturating_sub(i64::try_from(grace_s).unwrap_or(i64::MAX));
    for pair in history.windows(2) {
        if pair[1].created_unix > cutoff {
            keep_for(pair[0].number, RetentionReason::Grace);
        }
    }
    for row in history.iter().filter(|r| pinned.contains(&r.number)) {
        keep_for(row.number, RetentionReason::Pinned);
    }
    for reasons in kept.values_mut() {
        reasons.sort_unstable();
    }
    kept
}

/// What one pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Collection {
    /// A build was running: nothing was looked at.
    pub deferred: bool,
    /// Revisions whose index file was deleted.
    pub revisions: u64,
    /// Packs of the table collected, and their bytes.
    pub packs: u64,
    pub bytes: u64,
    /// Other store files deleted (not packs of the table), and their bytes.
    pub orphans: u64,
    pub orphan_bytes: u64,
}

/// The collection's counters and the memory it keeps between passes.
pub(crate) struct Collector {
    /// Pack numbers each kept revision lists (decoding an old index costs time).
    pack_sets: Mutex<HashMap<u64, Arc<HashSet<u32>>>>,
    pub runs: AtomicU64,
    pub failures: AtomicU64,
    pub revisions: AtomicU64,
    pub packs: AtomicU64,
    pub bytes: AtomicU64,
    pub last_run_unix: AtomicI64,
}

impl Collector {
    pub(crate) fn new() -> Collector {
        Collector {
            pack_sets: Mutex::default(),
            runs: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            revisions: AtomicU64::new(0),
            packs: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            last_run_unix: AtomicI64::new(0),
        }
    }
}

impl Master {
    /// Why each revision kept now is kept ([`retention`] under the configuration, with the
    /// rollbacks recorded and the revisions clients reported as pinned).
    pub(crate) fn retention(&self) -> BTreeMap<u64, Vec<RetentionReason>> {
        let history = read(&self.inner.catalog.history).clone();
        self.retention_of(&history)
    }

    /// [`Master::retention`] of `history` (a copy of the catalog's, taken by the caller).
    fn retention_of(&self, history: &[RevisionRow]) -> BTreeMap<u64, Vec<RetentionReason>> {
        let config = &self.inner.config;
        retention(
            history,
            config.keep_revisions,
            config.gc_grace.as_secs(),
            now_unix(),
            &self.inner.notes.rollbacks(),
            &self.pinned_revisions(),
        )
    }

    /// One collection pass (see the module documentation). Blocking: file and database I/O.
    pub(crate) fn collect_garbage(&self) -> Result<Collection, MasterError> {
        let _exclusive = lock(&self.inner.upkeep.maintenance.lock);
        let book = self.builds_guard();
        if book.running.is_some() {
            return Ok(Collection {
                deferred: true,
                ..Collection::default()
            });
        }
        let Some(current) = self.current() else {
            return Ok(Collection::default());
        };
        let now_s = now_unix();
        let history = read(&self.inner.catalog.history).clone();
        let kept: BTreeSet<u64> = self.retention_of(&history).into_keys().collect();

        // Packs the kept revisions list.
        let collector = &self.inner.upkeep.collector;
        let mut referenced: HashSet<u32> = HashSet::new();
        {
            let mut sets = lock(&collector.pack_sets);
            sets.retain(|n, _| kept.contains(n));
            for row in history.iter().filter(|r| kept.contains(&r.number)) {
                let set = match sets.get(&row.number) {
                    Some(set) => set.clone(),
                    None => {
                        let Some(set) = self.pack_set(row, &current)? else {
                            continue;
                        };
                        sets.insert(row.number, set.clone());
                        set
                    }
                };
                referenced.extend(set.iter().copied());
            }
        }
        let garbage: Vec<PackInfo> = {
            let t = read(&self.inner.catalog.packs);
            let mut g: Vec<PackInfo> = t
                .by_number
                .values()
                .filter(|p| !referenced.contains(&p.number))
                .copied()
                .collect();
            g.sort_by_key(|p| p.number);
            g
        };

        let mut done = Collection::default();
        // 1. Revisions no longer kept: no client may ask for them from now on.
        let dir = &self.inner.catalog.revisions_dir;
        for row in history.iter().filter(|r| !kept.contains(&r.number)) {
            if revision::remove_index_file(dir, row.number)? {
                self.forget_old_revision(row.number);
                done.revisions += 1;
            }
        }
        // 2. The packs, in the database and then in memory (no lock of the catalog or the
        // fleet across the commit; then packs, then tracker).
        if !garbage.is_empty() {
            let numbers: Vec<u32> = garbage.iter().map(|p| p.number).collect();
            lock(&self.inner.db).collect(&numbers, now_s)?;
            let mut table = write(&self.inner.catalog.packs);
            for p in &garbage {
                table.remove(p.number);
            }
            drop(table);
            let mut tracker = lock(&self.inner.fleet.tracker);
            for s in tracker.slaves.values_mut() {
                for p in &garbage {
                    if s.packs.remove(&p.number) {
                        s.foreign.insert(p.hash);
                    }
                }
            }
            drop(tracker);
            self.inner.fleet.placement_changed();
        }
        // 3. The files: the collected packs, then whatever else is no pack of the table.
        let store = &self.inner.store;
        for p in &garbage {
            if store.remove(&p.hash)? {
                done.packs += 1;
                done.bytes += p.size;
            }
        }
        let orphans: Vec<(hummel_core::Hash, u64)> = {
            let t = read(&self.inner.catalog.packs);
            store
                .list()
                .into_iter()
                .filter(|(h, _)| !t.by_hash.contains_key(h))
                .collect()
        };
        for (hash, size) in orphans {
            if store.remove(&hash)? {
                done.orphans += 1;
                done.orphan_bytes += size;
            }
        }
        drop(book);
        Ok(done)
    }

    /// The pack numbers `row`'s index lists; `None` if its index file is gone (expired before,
    /// say under a smaller `keep_revisions`).
    fn pack_set(
        &self,
        row: &RevisionRow,
        current: &LoadedRevision,
    ) -> Result<Option<Arc<HashSet<u32>>>, MasterError> {
        let numbers = |index: &hummel_core::Index| -> Arc<HashSet<u32>> {
            Arc::new(index.packs.iter().map(|p| p.number).collect())
        };
        if row.number == current.row.number {
            return Ok(Some(numbers(&current.index)));
        }
        if !revision::index_path(&self.inner.catalog.revisions_dir, row.number).is_file() {
            return Ok(None);
        }
        let loaded = revision::load_revision(&self.inner.catalog.revisions_dir, row.clone())?;
        Ok(Some(numbers(&loaded.index)))
    }

    /// Runs [`Master::collect_garbage`], logs and counts the outcome. Never panics.
    pub(crate) fn gc_pass(&self) {
        let collector = &self.inner.upkeep.collector;
        let started = std::time::Instant::now();
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.collect_garbage()));
        match result {
            Ok(Ok(c)) if c.deferred => {}
            Ok(Ok(c)) => {
                collector.runs.fetch_add(1, Ordering::Relaxed);
                collector.last_run_unix.store(now_unix(), Ordering::Relaxed);
                collector
                    .revisions
                    .fetch_add(c.revisions, Ordering::Relaxed);
                collector
                    .packs
                    .fetch_add(c.packs + c.orphans, Ordering::Relaxed);
                collector
                    .bytes
                    .fetch_add(c.bytes + c.orphan_bytes, Ordering::Relaxed);
                if c != Collection::default() {
                    tracing::info!(
                        revisions = c.revisions,
                        packs = c.packs,
                        bytes = c.bytes,
                        orphans = c.orphans,
                        orphan_bytes = c.orphan_bytes,
                        secs = format!("{:.1}", started.elapsed().as_secs_f64()),
                        "garbage collected"
                    );
                }
            }
            Ok(Err(e)) => {
                collector.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "garbage collection failed");
            }
            Err(_) => {
                collector.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!("garbage collection panicked");
            }
        }
    }

    /// The collection's part of the status.
    pub(crate) fn gc_status(&self) -> GcStatus {
        let c = &self.inner.upkeep.collector;
        let last = c.last_run_unix.load(Ordering::Relaxed);
        GcStatus {
            keep_revisions: self.inner.config.keep_revisions,
            grace_s: self.inner.config.gc_grace.as_secs(),
            runs: c.runs.load(Ordering::Relaxed),
            revisions_expired: c.revisions.load(Ordering::Relaxed),
            packs_collected: c.packs.load(Ordering::Relaxed),
            bytes_collected: c.bytes.load(Ordering::Relaxed),
            last_run_unix: (last > 0).then_some(last),
            retained: self
                .retention()
                .into_iter()
                .rev()
                .take(hummel_proto::api::MAX_REVISIONS_LISTED)
                .map(|(revision, reasons)| hummel_proto::api::RetainedRevision {
                    revision,
                    reasons,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
impl Master {
    /// Moves every time the collection looks at `secs` into the past: the revisions'
    /// publication.
    pub(crate) fn pretend_time_passed(&self, secs: u64) {
        for row in write(&self.inner.catalog.history).iter_mut() {
            row.created_unix -= i64::try_from(secs).unwrap();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hummel_core::Hash;

    fn row(number: u64, created_unix: i64, build: Option<u64>) -> RevisionRow {
        RevisionRow {
            number,
            created_unix,
            index_hash: Hash([0; 32]),
            files: 0,
            bytes: 0,
            build_started_unix: created_unix,
            build_id: build,
            mass_delete_confirmed: false,
        }
    }

    fn kept(history: &[RevisionRow], keep: u32, grace_s: u64, now: i64) -> Vec<u64> {
        kept_revisions(history, keep, grace_s, now)
            .into_iter()
            .collect()
    }

    #[test]
    fn the_newest_builds_are_kept_in_their_latest_form() {
        // Builds at 1, 3 and 5; the repack republished 1 as 2 and 3 as 4.
        let h = [
            row(1, 100, Some(1)),
            row(2, 200, None),
            row(3, 300, Some(2)),
            row(4, 400, None),
            row(5, 500, Some(3)),
        ];
        assert_eq!(kept(&h, 1, 0, 10_000), [5]);
        assert_eq!(kept(&h, 2, 0, 10_000), [4, 5]);
        assert_eq!(kept(&h, 3, 0, 10_000), [2, 4, 5]);
        assert_eq!(kept(&h, 9, 0, 10_000), [2, 4, 5]);
        // 0 still keeps the current revision.
        assert_eq!(kept(&h, 0, 0, 10_000), [5]);
        assert!(kept(&[], 2, 60, 10_000).is_empty());
    }

    #[test]
    fn rollbacks_count_as_builds_and_pins_keep_their_revision_with_reasons() {
        use RetentionReason::*;
        // Builds at 1 and 2, a rollback to 1 published as 3 (no build), a build at 4.
        let h = [
            row(1, 100, Some(1)),
            row(2, 200, Some(2)),
            row(3, 300, None),
            row(4, 400, Some(3)),
        ];
        let none = BTreeSet::new();
        let rollbacks: BTreeSet<u64> = [3].into();
        // Without knowing 3 is a rollback, it would count as 2's repack.
        assert_eq!(kept(&h, 2, 0, 10_000), [3, 4]);
        let why = retention(&h, 3, 0, 10_000, &rollbacks, &none);
        assert_eq!(
            why.into_iter().collect::<Vec<_>>(),
            [
                (2, vec![Recent]),
                (3, vec![Recent]),
                (4, vec![Current, Recent])
            ]
        );
        let pinned: BTreeSet<u64> = [1, 99].into();
        let why = retention(&h, 1, 150, 350, &rollbacks, &pinned);
        assert_eq!(
            why.into_iter().collect::<Vec<_>>(),
            [
                (1, vec![Pinned]),
                (2, vec![Grace]),
                (3, vec![Grace]),
                (4, vec![Current, Recent])
            ]
        );
    }

    #[test]
    fn a_revision_superseded_within_the_grace_period_is_kept() {
        let h = [
            row(1, 100, Some(1)),
            row(2, 200, None),
            row(3, 300, Some(2)),
        ];
        // 2 was superseded at 300: kept until 300 + grace.
        assert_eq!(kept(&h, 1, 50, 340), [2, 3]);
        assert_eq!(kept(&h, 1, 50, 350), [3]);
        // 1 was superseded at 200.
        assert_eq!(kept(&h, 1, 150, 340), [1, 2, 3]);
        // A clock that went backwards keeps more, never less.
        assert_eq!(kept(&h, 1, 0, 0), [1, 2, 3]);
    }
}
