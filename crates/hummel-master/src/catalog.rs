//! [`Catalog`]: the revisions and packs the master publishes, mirrored from the database.
//!
//! - the current revision, decoded and encoded ([`LoadedRevision`]), behind an
//!   `RwLock<Option<Arc<_>>>`: readers take the `Arc` and never wait for a build;
//! - the revision history (one [`RevisionRow`] per revision whose row exists);
//! - the pack enumeration ([`PackTable`]): number ↔ hash, the zstd level each was written at,
//!   and the number the next new pack gets;
//! - the last older revision a client asked for, decoded (a cache of one).
//!
//! Every lock here is held only for memory: the database is written first by the caller
//! (`Master::publish`, the garbage collection), then [`Catalog::record_publication`] or the
//! table's removals apply it. Lock order inside: packs, then history, then current. The pack
//! table may be held while taking the fleet's locks (`locate`, the prober), never the other
//! way round; history, current and the old-revision cache are held alone.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use hummel_core::{Hash, PackInfo};
use hummel_store::BlobStore;

use crate::db::{Db, RevisionRow};
use crate::error::MasterError;
use crate::revision::{self, LoadedRevision};
use crate::tracker::ReplicaChange;
use crate::{lock, read, write};

/// The revisions and packs.
pub(crate) struct Catalog {
    /// Where the encoded indexes live (`DATA/revisions/N.idx`).
    pub revisions_dir: PathBuf,
    current: RwLock<Option<Arc<LoadedRevision>>>,
    pub history: RwLock<Vec<RevisionRow>>,
    pub packs: RwLock<PackTable>,
    old_revision: Mutex<Option<Arc<LoadedRevision>>>,
}

/// The pack enumeration.
#[derive(Debug, Default)]
pub(crate) struct PackTable {
    pub by_number: HashMap<u32, PackInfo>,
    pub by_hash: HashMap<Hash, u32>,
    /// The zstd level each pack was written at (the repack's criterion).
    pub levels: HashMap<u32, i32>,
    /// The number the next new pack gets.
    pub next_number: u32,
}

impl PackTable {
    pub(crate) fn insert(&mut self, p: PackInfo, level: i32) {
        self.levels.insert(p.number, level);
        self.by_number.insert(p.number, p);
        self.by_hash.insert(p.hash, p.number);
        self.next_number = self.next_number.max(p.number.saturating_add(1));
    }

    /// Forgets a collected pack; its number is not given again.
    pub(crate) fn remove(&mut self, number: u32) {
        if let Some(p) = self.by_number.remove(&number) {
            self.by_hash.remove(&p.hash);
        }
        self.levels.remove(&number);
    }

    /// The replica change "remove `remove`, then add `add`", split into pack numbers the table
    /// knows and other hashes.
    pub(crate) fn resolve(&self, remove: &[Hash], add: &[Hash]) -> ReplicaChange {
        let mut change = ReplicaChange::default();
        for h in remove {
            match self.by_hash.get(h) {
                Some(&n) => change.remove.push(n),
                None => change.remove_foreign.push(*h),
            }
        }
        for h in add {
            match self.by_hash.get(h) {
                Some(&n) => change.add.push(n),
                None => change.add_foreign.push(*h),
            }
        }
        change
    }
}

impl Catalog {
    /// Loads the history, the current revision's index and the pack table. Blocking.
    pub(crate) fn load(
        db: &Db,
        revisions_dir: PathBuf,
        store: &BlobStore,
    ) -> Result<Catalog, MasterError> {
        let history = db.load_revisions()?;
        let current = match history.last() {
            Some(row) => Some(Arc::new(revision::load_revision(
                &revisions_dir,
                row.clone(),
            )?)),
            None => None,
        };
        let mut packs = PackTable {
            next_number: 1,
            ..PackTable::default()
        };
        for (p, level) in db.load_packs()? {
            packs.insert(p, level);
        }
        // Collected packs keep their numbers.
        packs.next_number = packs
            .next_number
            .max(db.max_pack_number()?.saturating_add(1));
        if let Some(c) = &current {
            let missing = c
                .index
                .packs
                .iter()
                .filter(|p| !store.contains(&p.hash))
                .count();
            if missing > 0 {
                tracing::error!(
                    revision = c.row.number,
                    missing,
                    "packs of the current revision are missing from the master's store"
                );
            }
        }
        Ok(Catalog::new(revisions_dir, history, current, packs))
    }

    fn new(
        revisions_dir: PathBuf,
        history: Vec<RevisionRow>,
        current: Option<Arc<LoadedRevision>>,
        packs: PackTable,
    ) -> Catalog {
        Catalog {
            revisions_dir,
            current: RwLock::new(current),
            history: RwLock::new(history),
            packs: RwLock::new(packs),
            old_revision: Mutex::new(None),
        }
    }

    /// The current revision, if any.
    pub(crate) fn current(&self) -> Option<Arc<LoadedRevision>> {
        read(&self.current).clone()
    }

    /// Applies a publication the database committed: its new packs (at `level`), the packs
    /// now recorded at `level`, its history row, and `loaded` as the current revision.
    pub(crate) fn record_publication(
        &self,
        loaded: LoadedRevision,
        new_packs: &[PackInfo],
        level: i32,
        relevelled: &[u32],
    ) {
        {
            let mut t = write(&self.packs);
            for p in new_packs {
                t.insert(*p, level);
            }
            for n in relevelled {
                t.levels.insert(*n, level);
            }
        }
        write(&self.history).push(loaded.row.clone());
        *write(&self.current) = Some(Arc::new(loaded));
    }

    /// The highest revision number in the history.
    pub(crate) fn highest(&self) -> Option<u64> {
        read(&self.history).iter().map(|r| r.number).max()
    }

    /// The last `limit` revisions, newest first.
    #[cfg(test)]
    pub(crate) fn history(&self, limit: usize) -> Vec<RevisionRow> {
        read(&self.history)
            .iter()
            .rev()
            .take(limit)
            .cloned()
            .collect()
    }

    /// The history row of revision `n`, if the history has it.
    pub(crate) fn row(&self, n: u64) -> Option<RevisionRow> {
        read(&self.history).iter().find(|r| r.number == n).cloned()
    }

    /// The pack numbers of the table.
    pub(crate) fn pack_count(&self) -> usize {
        read(&self.packs).by_number.len()
    }

    /// Drops revision `n` from the cache of old revisions (its index file is gone).
    pub(crate) fn forget_old_revision(&self, n: u64) {
        let mut cache = lock(&self.old_revision);
        if cache.as_ref().is_some_and(|c| c.row.number == n) {
            *cache = None;
        }
    }

    /// An older revision, decoded (the last one asked for is cached). Blocking: reads and
    /// decodes its index file under the cache's lock, so that two requests decode it once.
    pub(crate) fn old_revision(
        &self,
        row: RevisionRow,
    ) -> Result<Arc<LoadedRevision>, MasterError> {
        let mut cache = lock(&self.old_revision);
        if let Some(c) = cache.as_ref()
            && c.row.number == row.number
        {
            return Ok(c.clone());
        }
        let loaded = Arc::new(revision::load_revision(&self.revisions_dir, row)?);
        *cache = Some(loaded.clone());
        Ok(loaded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(number: u32) -> PackInfo {
        PackInfo {
            number,
            hash: Hash::of(&number.to_le_bytes()),
            size: 100,
        }
    }

    #[test]
    fn the_table_resolves_known_hashes_to_numbers_and_keeps_numbers_after_removal() {
        let mut t = PackTable {
            next_number: 1,
            ..PackTable::default()
        };
        t.insert(pack(1), 3);
        t.insert(pack(2), 3);
        let stranger = Hash::of(b"not a pack");
        let change = t.resolve(&[pack(1).hash, stranger], &[pack(2).hash, stranger]);
        assert_eq!(change.remove, vec![1]);
        assert_eq!(change.remove_foreign, vec![stranger]);
        assert_eq!(change.add, vec![2]);
        assert_eq!(change.add_foreign, vec![stranger]);
        t.remove(2);
        assert!(!t.by_hash.contains_key(&pack(2).hash));
        assert!(!t.levels.contains_key(&2));
        // A collected pack's number is not given again.
        assert_eq!(t.next_number, 3);
    }

    #[test]
    fn a_publication_updates_table_history_and_current_together() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::new(dir.path().into(), Vec::new(), None, PackTable::default());
        assert!(catalog.current().is_none());
        let index = hummel_core::Index {
            revision: 7,
            created_unix: 1,
            chunker: hummel_core::ChunkerConfig::default(),
            root: None,
            entries: Vec::new(),
            chunks: Vec::new(),
            packs: Vec::new(),
            info: Default::default(),
        };
        let row = RevisionRow {
            number: 7,
            created_unix: 1,
            index_hash: Hash::of(b"index"),
            files: 0,
            bytes: 0,
            build_started_unix: 1,
            build_id: Some(1),
            mass_delete_confirmed: false,
        };
        let loaded = LoadedRevision {
            row: row.clone(),
            tree: Arc::new(hummel_core::tree::TreeHashes::compute(&index)),
            index: Arc::new(index),
            encoded: bytes::Bytes::new(),
        };
        catalog.record_publication(loaded, &[pack(4)], 13, &[]);
        assert_eq!(catalog.current().map(|c| c.row.number), Some(7));
        assert_eq!(catalog.highest(), Some(7));
        assert_eq!(catalog.row(7), Some(row));
        assert_eq!(catalog.pack_count(), 1);
        let t = read(&catalog.packs);
        assert_eq!(t.levels.get(&4), Some(&13));
        assert_eq!(t.next_number, 5);
    }
}
