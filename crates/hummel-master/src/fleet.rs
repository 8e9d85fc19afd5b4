//! [`Fleet`]: the slaves and clients as the master tracks them, and the placement of the
//! current revision's packs over the slaves, cached.
//!
//! - the [`Tracker`] (slaves, clients) behind one mutex, mirrored from the database;
//! - each slave's enrolled key ([`Identities`]) behind its own mutex;
//! - what probes found of the slaves' claims ([`Prober`], its trust book behind its own mutex);
//! - the epochs of complete hashlists and the turn that rotates `locate` answers (atomics);
//! - the **ordering stripes**: a request of a slave or client that writes the database holds
//!   its id's stripe ([`Fleet::order`]) from before its transaction until its change is in
//!   memory, so two requests of one slave (or client) cannot apply in another order than they
//!   committed, while no lock others read under is held across the commit;
//! - the **placement** ([`Plan`]): computed when one of its inputs changed, not per request.
//!   Its inputs are the current revision, the non-dead slaves whose last probe did not fail,
//!   their replica sets, quotas and (with a quota) usage. Whoever changes one of those calls
//!   [`Fleet::placement_changed`] after the change is in memory; a new revision is noticed by
//!   its `Arc`; a slave going dead is foreseen (the plan is valid until the first of its slaves
//!   may be dead). Readers take an `Arc<Plan>` and read it without a lock. A **draining** slave
//!   (the admin's [`SlaveRecord::draining`], an input too) is a candidate that gets no new
//!   packs; the plan says when its drain is complete ([`Plan::drained`]).
//!
//! Lock order: ordering stripe, then plan cache, then (the catalog's pack table, then) tracker,
//! then trust book, then identities (then the database's mutex, whose holder takes no other).
//! Nothing here is held across a database commit except the ordering stripe. A reader never
//! holds the tracker while it asks for the plan ([`Fleet::plan`] takes the tracker itself when
//! it recomputes).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use hummel_proto::api::SlaveState;

use crate::identity::Identities;
use crate::lock;
use crate::placement::{self, Candidate, PackSlot, Placement};
use crate::probe::{Prober, TrustBook};
use crate::revision::LoadedRevision;
use crate::tracker::{Liveness, SlaveRecord, Tracker};

/// Ordering stripes: enough that unrelated slaves rarely share one.
const STRIPES: usize = 64;

/// The slaves, clients, their keys and probe results, and the cached placement.
pub(crate) struct Fleet {
    pub tracker: Mutex<Tracker>,
    /// Each slave's enrolled key (`crate::identity`).
    pub identities: Mutex<Identities>,
    /// What probes found of the slaves' claims (`crate::probe`).
    pub probes: Prober,
    liveness: Liveness,
    replication: u32,
    /// The next epoch of a slave's hashlist: one per complete hashlist accepted, never reused
    /// while the process runs (starts at random, below 2^53 so JSON tools read it exactly).
    hashlist_epochs: AtomicU64,
    locate_turn: AtomicU64,
    stripes: Vec<Mutex<()>>,
    /// Counts the changes of the placement's inputs ([`Fleet::placement_changed`]).
    changes: AtomicU64,
    plan: Mutex<Option<Arc<Plan>>>,
}

/// The placement of one revision's packs over the candidate slaves (non-dead, last probe not
/// failed), as of one state of its inputs.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The revision placed (compared by pointer: a new revision is a new `Arc`).
    revision: Option<Arc<LoadedRevision>>,
    /// [`Fleet::changes`] when the inputs were read.
    changes: u64,
    /// Until when no candidate can be dead: the earliest `last_seen + dead_after`.
    valid_until_ms: u64,
    /// The revision's packs, in pack order.
    pub slots: Vec<PackSlot>,
    /// The candidates, in id order.
    pub ids: Vec<String>,
    positions: HashMap<String, usize>,
    /// Per candidate, the packs it should hold but does not.
    pub placement: Placement,
    /// Per slot, the candidates holding it (positions into `ids`).
    holders: Vec<Vec<usize>>,
    /// Per candidate: draining, and every pack of the revision it holds has `replication`
    /// copies on non-draining candidates (`crate::placement::drained`).
    drained: Vec<bool>,
}

impl Plan {
    /// The slots slave `id` should fetch, if it is a candidate.
    pub(crate) fn pending(&self, id: &str) -> Option<&[usize]> {
        self.positions
            .get(id)
            .map(|&i| self.placement.pending[i].as_slice())
    }

    /// Whether slave `id` is a candidate whose drain is complete: removing it loses no copy
    /// the placement wants.
    pub(crate) fn drained(&self, id: &str) -> bool {
        self.positions.get(id).is_some_and(|&i| self.drained[i])
    }

    /// The slaves holding slot `pos` that are live at `now`, still claim it and whose last
    /// probe did not fail, in id order.
    pub(crate) fn live_holders<'t>(
        &'t self,
        tracker: &'t Tracker,
        trust: &'t TrustBook,
        liveness: Liveness,
        pos: usize,
        now: u64,
    ) -> impl Iterator<Item = &'t SlaveRecord> + 't {
        let number = self.slots[pos].number;
        self.holders[pos]
            .iter()
            .filter_map(|&i| tracker.slaves.get(&self.ids[i]))
            .filter(move |s| {
                liveness.state(s.last_seen_ms, now) == SlaveState::Live
                    && s.packs.contains(&number)
                    && !trust.failed(&s.id)
            })
    }

    fn fits(&self, revision: Option<&Arc<LoadedRevision>>, changes: u64, now: u64) -> bool {
        let same_revision = match (&self.revision, revision) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        same_revision && self.changes == changes && now < self.valid_until_ms
    }
}

/// One candidate as read for a placement.
struct Snapshot {
    id: String,
    quota: Option<u64>,
    used: u64,
    holds: HashSet<u32>,
    last_seen_ms: u64,
    draining: bool,
}

impl Fleet {
    pub(crate) fn new(
        tracker: Tracker,
        identities: Identities,
        liveness: Liveness,
        replication: u32,
    ) -> Fleet {
        Fleet {
            tracker: Mutex::new(tracker),
            identities: Mutex::new(identities),
            probes: Prober::default(),
            liveness,
            replication,
            hashlist_epochs: AtomicU64::new(u64::from(rand::random::<u32>()) << 20),
            locate_turn: AtomicU64::new(0),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            changes: AtomicU64::new(0),
            plan: Mutex::new(None),
        }
    }

    /// The epoch of the next complete hashlist accepted.
    pub(crate) fn next_hashlist_epoch(&self) -> u64 {
        self.hashlist_epochs.fetch_add(1, Ordering::Relaxed)
    }

    /// The next turn of `locate`'s rotation.
    pub(crate) fn next_locate_turn(&self) -> u64 {
        self.locate_turn.fetch_add(1, Ordering::Relaxed)
    }

    /// The ordering stripe of slave or client `id`: held from before the database write of one
    /// of its requests until that change is in memory.
    pub(crate) fn order(&self, id: &str) -> MutexGuard<'_, ()> {
        lock(&self.stripes[self.stripe(id)])
    }

    fn stripe(&self, id: &str) -> usize {
        (crate::placement::score(&hummel_core::Hash::of(id.as_bytes()), "") as usize)
            % self.stripes.len()
    }

    /// Whether `id`'s ordering stripe is held now.
    #[cfg(test)]
    pub(crate) fn order_taken(&self, id: &str) -> bool {
        self.stripes[self.stripe(id)].try_lock().is_err()
    }

    /// An input of the placement changed (in memory already): the next [`Fleet::plan`]
    /// computes it again.
    pub(crate) fn placement_changed(&self) {
        self.changes.fetch_add(1, Ordering::SeqCst);
    }

    /// The placement of `revision`'s packs as of now: the cached one if none of its inputs
    /// changed, otherwise computed again (CPU: packs × candidates hashes). Blocking; the caller
    /// holds no lock of this component.
    pub(crate) fn plan(&self, revision: Option<&Arc<LoadedRevision>>, now: u64) -> Arc<Plan> {
        let mut cache = lock(&self.plan);
        // Read before the inputs: a change after this makes the next call compute again.
        let changes = self.changes.load(Ordering::SeqCst);
        if let Some(p) = cache.as_ref()
            && p.fits(revision, changes, now)
        {
            return p.clone();
        }
        let plan = Arc::new(self.compute(revision, changes, now));
        *cache = Some(plan.clone());
        plan
    }

    fn compute(&self, revision: Option<&Arc<LoadedRevision>>, changes: u64, now: u64) -> Plan {
        let liveness = self.liveness;
        let chosen: Vec<Snapshot> = {
            let tracker = lock(&self.tracker);
            // A slave that failed a probe gets no packs: its share goes to the others.
            let trust = self.probes.book();
            tracker
                .slaves
                .values()
                .filter(|s| liveness.state(s.last_seen_ms, now) != SlaveState::Dead)
                .filter(|s| !trust.failed(&s.id))
                .map(|s| Snapshot {
                    id: s.id.clone(),
                    quota: s.quota,
                    used: s.used,
                    holds: s.packs.clone(),
                    last_seen_ms: s.last_seen_ms,
                    draining: s.draining,
                })
                .collect()
        };
        let slots: Vec<PackSlot> = revision
            .map(|c| {
                c.index
                    .packs
                    .iter()
                    .map(|p| PackSlot {
                        number: p.number,
                        hash: p.hash,
                        size: p.size,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let candidates: Vec<Candidate<'_>> = chosen
            .iter()
            .map(|s| Candidate {
                id: &s.id,
                quota: s.quota,
                used: s.used,
                holds: &s.holds,
                draining: s.draining,
            })
            .collect();
        let placement = placement::place(&slots, &candidates, self.replication);
        let drained = candidates
            .iter()
            .enumerate()
            .map(|(i, c)| {
                c.draining && placement::drained(&slots, &candidates, i, self.replication)
            })
            .collect();
        let holders = slots
            .iter()
            .map(|slot| {
                chosen
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.holds.contains(&slot.number))
                    .map(|(i, _)| i)
                    .collect()
            })
            .collect();
        let dead_after = u64::try_from(liveness.dead_after.as_millis()).unwrap_or(u64::MAX);
        let valid_until_ms = chosen
            .iter()
            .map(|s| s.last_seen_ms.saturating_add(dead_after))
            .min()
            .unwrap_or(u64::MAX);
        let ids: Vec<String> = chosen.into_iter().map(|s| s.id).collect();
        Plan {
            revision: revision.cloned(),
            changes,
            valid_until_ms,
            slots,
            positions: ids
                .iter()
                .enumerate()
                .map(|(i, id)| (id.clone(), i))
                .collect(),
            ids,
            placement,
            holders,
            drained,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hummel_core::{ChunkerConfig, Hash, Index, PackInfo};

    use super::*;
    use crate::db::RevisionRow;
    use crate::tracker::Vetting;

    const LIVENESS: Liveness = Liveness {
        stale_after: Duration::from_secs(30),
        dead_after: Duration::from_secs(600),
    };

    fn revision(packs: u32) -> Arc<LoadedRevision> {
        let index = Index {
            revision: 1,
            created_unix: 1,
            chunker: ChunkerConfig::default(),
            root: None,
            entries: Vec::new(),
            chunks: Vec::new(),
            packs: (1..=packs)
                .map(|n| PackInfo {
                    number: n,
                    hash: Hash::of(&n.to_le_bytes()),
                    size: 10,
                })
                .collect(),
            info: Default::default(),
        };
        Arc::new(LoadedRevision {
            row: RevisionRow {
                number: 1,
                created_unix: 1,
                index_hash: Hash::of(b"i"),
                files: 0,
                bytes: 0,
                build_started_unix: 1,
                build_id: None,
                mass_delete_confirmed: false,
            },
            tree: Arc::new(hummel_core::tree::TreeHashes::compute(&index)),
            index: Arc::new(index),
            encoded: bytes::Bytes::new(),
        })
    }

    fn slave(id: &str, last_seen_ms: u64, packs: &[u32]) -> SlaveRecord {
        SlaveRecord {
            id: id.into(),
            url: format!("http://{id}"),
            quota: None,
            used: 0,
            replicating: 0,
            last_seen_ms,
            packs: packs.iter().copied().collect(),
            foreign: HashSet::new(),
            foreign_as_of: 0,
            hashlist: None,
            vetting: Vetting::Accepted,
            draining: false,
            served: None,
            egress: None,
        }
    }

    fn fleet(slaves: Vec<SlaveRecord>) -> Fleet {
        let mut tracker = Tracker::default();
        for s in slaves {
            tracker.slaves.insert(s.id.clone(), s);
        }
        Fleet::new(tracker, Identities::load(Vec::new()), LIVENESS, 2)
    }

    #[test]
    fn the_plan_is_kept_until_an_input_changes() {
        let now = 1_000_000;
        let f = fleet(vec![slave("a", now, &[1]), slave("b", now, &[])]);
        let rev = revision(3);
        let first = f.plan(Some(&rev), now);
        assert_eq!(first.ids, ["a", "b"]);
        // Both slaves are the two targets of every pack: b lacks all three, a two.
        assert_eq!(first.pending("a").map(<[usize]>::len), Some(2));
        assert_eq!(first.pending("b").map(<[usize]>::len), Some(3));
        assert!(Arc::ptr_eq(&first, &f.plan(Some(&rev), now + 1)));

        // A replica change, announced: computed again, and it shows.
        lock(&f.tracker)
            .slaves
            .get_mut("b")
            .unwrap()
            .packs
            .insert(2);
        f.placement_changed();
        let second = f.plan(Some(&rev), now + 2);
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(second.pending("b").map(<[usize]>::len), Some(2));

        // A new revision (another `Arc`, even of the same packs) is placed anew.
        let third = f.plan(Some(&revision(3)), now + 3);
        assert!(!Arc::ptr_eq(&second, &third));
        assert_eq!(f.plan(None, now + 4).slots.len(), 0);
    }

    #[test]
    fn a_slave_going_dead_is_foreseen_without_an_announcement() {
        let now = 5_000_000;
        let dead_after = 600_000;
        let f = fleet(vec![
            slave("a", now, &[1]),
            slave("b", now - dead_after + 10, &[1]),
        ]);
        let rev = revision(1);
        let plan = f.plan(Some(&rev), now);
        assert_eq!(plan.ids, ["a", "b"]);
        let tracker = lock(&f.tracker);
        let trust = f.probes.book();
        // Live holders are checked at reading time: b is stale already.
        let live: Vec<&str> = plan
            .live_holders(&tracker, &trust, LIVENESS, 0, now)
            .map(|s| s.id.as_str())
            .collect();
        assert_eq!(live, ["a"]);
        drop(trust);
        drop(tracker);
        // Ten milliseconds later b is dead: no longer a candidate.
        let later = f.plan(Some(&rev), now + 10);
        assert_eq!(later.ids, ["a"]);
        assert!(later.pending("b").is_none());
    }

    #[test]
    fn one_id_always_takes_the_same_stripe() {
        let f = fleet(Vec::new());
        assert!(!f.order_taken("slave-a"));
        let a = f.order("slave-a");
        // Another id may share the stripe, but the same id must wait.
        assert!(f.order_taken("slave-a"));
        drop(a);
        assert!(!f.order_taken("slave-a"));
    }

    #[test]
    fn a_drain_changes_the_plan_and_completes_once_copied() {
        let now = 1_000_000;
        let f = fleet(vec![
            slave("a", now, &[1, 2, 3]),
            slave("b", now, &[]),
            slave("c", now, &[]),
        ]);
        let rev = revision(3);
        let before = f.plan(Some(&rev), now);
        assert!(!before.drained("a"));
        lock(&f.tracker).slaves.get_mut("a").unwrap().draining = true;
        f.placement_changed();
        let plan = f.plan(Some(&rev), now + 1);
        assert!(!Arc::ptr_eq(&before, &plan));
        // b and c take every pack; a gets nothing and is not drained yet.
        assert_eq!(plan.pending("a").map(<[usize]>::len), Some(0));
        assert_eq!(plan.pending("b").map(<[usize]>::len), Some(3));
        assert_eq!(plan.pending("c").map(<[usize]>::len), Some(3));
        assert!(!plan.drained("a"));
        for id in ["b", "c"] {
            lock(&f.tracker).slaves.get_mut(id).unwrap().packs = [1, 2, 3].into();
        }
        f.placement_changed();
        let done = f.plan(Some(&rev), now + 2);
        assert!(done.drained("a"));
        assert!(!done.drained("b"));
    }
}
