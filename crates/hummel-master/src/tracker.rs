//! [`Tracker`]: what the master knows about slaves and clients, mirrored from the database.
//!
//! Slaves announce the complete set of packs they hold ([`SlaveRecord::packs`], by pack number)
//! and heartbeat; their [`SlaveState`] follows from the age of the last message. After a
//! complete hashlist, a slave sends only its changes, each against the [`HashlistVersion`] the
//! master acknowledged ([`SlaveRecord::hashlist`]); [`SlaveRecord::accepts`] decides whether
//! they apply (or why not: [`HashlistRefusal`]) and [`ReplicaChange`] applies them. Versions and
//! the hashes the master does not know ([`SlaveRecord::foreign`]) live only in memory: after a
//! restart every slave announces its complete hashlist again. Clients report what they hold
//! after each sync (`crate::clients`). The tracker is plain data; [`crate::fleet`] keeps it
//! behind a mutex, and every change is written to the database first, without that mutex
//! held, then applied under it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use hummel_core::Hash;
use hummel_proto::api::{ClientStatus, HashlistChanges, HashlistVersion, SlaveState};

/// A slave as the master knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SlaveRecord {
    pub id: String,
    pub url: String,
    pub quota: Option<u64>,
    pub used: u64,
    pub replicating: u64,
    /// Unix milliseconds of the last hashlist or heartbeat.
    pub last_seen_ms: u64,
    /// Pack numbers it holds.
    pub packs: HashSet<u32>,
    /// Hashes it holds that are no pack the master knows (say, from before the master's data
    /// was reset). Counted against the slave's own count; not persisted.
    pub foreign: HashSet<Hash>,
    /// The pack table's next pack number when `foreign` was looked up: once packs were
    /// published since, some of those hashes may be packs now.
    pub foreign_as_of: u32,
    /// The version of its hashlist the master holds, if its changes may be applied; not
    /// persisted.
    pub hashlist: Option<HashlistVersion>,
    /// Whether this process accepted its read-token digest; not persisted. A master with a read
    /// token sends clients only to [`Vetting::Accepted`] slaves; no master sends them to a
    /// [`Vetting::Refused`] one.
    pub vetting: Vetting,
    /// Whether the admin is draining it (persisted): it gets no new packs, its packs are
    /// placed on the others, and clients are sent to it only for packs without enough copies
    /// elsewhere (`crate::fleet`).
    pub draining: bool,
    /// The bytes its last heartbeat said it served, and when (not persisted).
    pub served: Option<(u64, u64)>,
    /// Bytes a second it served between its last two heartbeats (not persisted).
    pub egress: Option<u64>,
}

impl SlaveRecord {
    /// Takes a heartbeat's `bytes_served` at `now_ms`: the egress is the difference to the
    /// previous figure over the time between them (none after a restart of the slave).
    pub(crate) fn record_served(&mut self, bytes: Option<u64>, now_ms: u64) {
        let Some(b) = bytes else {
            self.served = None;
            self.egress = None;
            return;
        };
        self.egress = match self.served {
            Some((prev, at)) if b >= prev && now_ms > at => {
                Some((b - prev).saturating_mul(1000) / (now_ms - at))
            }
            _ => None,
        };
        self.served = Some((b, now_ms));
    }
}

/// What the master knows of a slave's read token (`crate::auth::check_slave_read_token`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Vetting {
    /// Loaded from the database: it has not announced to this process yet.
    Unknown,
    /// Its complete hashlist carried the digest the master wants.
    Accepted,
    /// Its last complete hashlist was refused for its read token.
    Refused,
}

impl Vetting {
    /// Whether clients may be sent to the slave (`private`: the master has a read token).
    pub(crate) fn serves_clients(self, private: bool) -> bool {
        match self {
            Vetting::Accepted => true,
            Vetting::Unknown => !private,
            Vetting::Refused => false,
        }
    }
}

/// Why a slave's [`HashlistChanges`] were not applied. Every refusal asks the slave for its
/// complete hashlist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HashlistRefusal {
    /// The master holds no version of the slave's hashlist: it restarted since the slave
    /// announced, or refused earlier changes.
    NoVersion,
    /// Older than the version held: an earlier epoch, or a late copy of a request whose
    /// successor was applied. The version held stays valid.
    Stale { held: HashlistVersion },
    /// Based on a version the master never acknowledged.
    OutOfSequence {
        held: HashlistVersion,
        base: u64,
        seq: u64,
    },
    /// Packs were published since the slave's unknown hashes were looked up; the complete
    /// hashlist maps those that are packs now.
    PacksPublished,
    /// After the changes the master would count `master` packs where the slave counts `slave`.
    CountMismatch { master: u64, slave: u64 },
}

impl HashlistRefusal {
    /// True if the version held can no longer be trusted and is dropped.
    pub(crate) fn forgets_version(&self) -> bool {
        !matches!(self, HashlistRefusal::Stale { .. })
    }
}

/// A change to one slave's replica set, resolved against the pack table: removals first, then
/// additions, so a pack both reported corrupt and fetched again is held.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ReplicaChange {
    pub remove: Vec<u32>,
    pub remove_foreign: Vec<Hash>,
    pub add: Vec<u32>,
    pub add_foreign: Vec<Hash>,
}

impl ReplicaChange {
    /// Appends `other`, to be applied after `self`.
    pub(crate) fn then(mut self, other: ReplicaChange) -> ReplicaChange {
        // A later addition overrides an earlier removal: removals run first.
        self.remove.retain(|n| !other.add.contains(n));
        self.remove_foreign
            .retain(|h| !other.add_foreign.contains(h));
        self.add.retain(|n| !other.remove.contains(n));
        self.add_foreign
            .retain(|h| !other.remove_foreign.contains(h));
        self.remove.extend(other.remove);
        self.remove_foreign.extend(other.remove_foreign);
        self.add.extend(other.add);
        self.add_foreign.extend(other.add_foreign);
        self
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remove.is_empty()
            && self.remove_foreign.is_empty()
            && self.add.is_empty()
            && self.add_foreign.is_empty()
    }
}

/// How many of `held` remain after removing `remove`, then adding `add`.
fn count_after<T: Eq + std::hash::Hash + Copy>(held: &HashSet<T>, remove: &[T], add: &[T]) -> u64 {
    let mut after: HashMap<T, bool> = HashMap::new();
    for x in remove {
        after.insert(*x, false);
    }
    for x in add {
        after.insert(*x, true);
    }
    let mut n = held.len() as i64;
    for (x, now) in after {
        n += i64::from(now) - i64::from(held.contains(&x));
    }
    u64::try_from(n).unwrap_or(0)
}

impl SlaveRecord {
    /// Whether `changes` may be applied to the version held: it is their base, or an earlier
    /// attempt from their base whose answer was lost (`base < held.seq <= seq`; the changes
    /// list every pack touched since `base` by its state now, so applying them again over an
    /// earlier attempt gives the same result).
    pub(crate) fn check_changes(&self, changes: &HashlistChanges) -> Result<(), HashlistRefusal> {
        let held = self.hashlist.ok_or(HashlistRefusal::NoVersion)?;
        let (base, seq) = (changes.base, changes.seq);
        if seq < base {
            return Err(HashlistRefusal::OutOfSequence { held, base, seq });
        }
        if changes.epoch != held.epoch {
            return Err(HashlistRefusal::Stale { held });
        }
        if held.seq == base || (base < held.seq && held.seq <= seq) {
            Ok(())
        } else if base < held.seq {
            Err(HashlistRefusal::Stale { held })
        } else {
            Err(HashlistRefusal::OutOfSequence { held, base, seq })
        }
    }

    /// Whether hashlist changes, resolved into `change` (corrupt packs included) against the
    /// pack table whose next pack number is `table_next`, may be applied: they fit the version
    /// held, no unknown hash of the slave may have become a pack, and afterwards the master
    /// counts the `slave_count` packs the slave reports.
    pub(crate) fn accepts(
        &self,
        changes: &HashlistChanges,
        change: &ReplicaChange,
        slave_count: u64,
        table_next: u32,
    ) -> Result<(), HashlistRefusal> {
        self.check_changes(changes)?;
        if !self.foreign.is_empty() && self.foreign_as_of != table_next {
            return Err(HashlistRefusal::PacksPublished);
        }
        let master = self.count_after(change);
        if master != slave_count {
            return Err(HashlistRefusal::CountMismatch {
                master,
                slave: slave_count,
            });
        }
        Ok(())
    }

    /// The number of packs it would hold after `change`, without changing anything.
    pub(crate) fn count_after(&self, change: &ReplicaChange) -> u64 {
        count_after(&self.packs, &change.remove, &change.add)
            + count_after(&self.foreign, &change.remove_foreign, &change.add_foreign)
    }

    /// Applies `change` in memory (the database first: see [`crate::db::Db::record_heartbeat`]).
    pub(crate) fn apply(&mut self, change: &ReplicaChange) {
        for n in &change.remove {
            self.packs.remove(n);
        }
        for h in &change.remove_foreign {
            self.foreign.remove(h);
        }
        self.packs.extend(change.add.iter().copied());
        self.foreign.extend(change.add_foreign.iter().copied());
    }
}

/// A client's last report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClientRecord {
    pub id: String,
    pub addr: String,
    pub revision: u64,
    pub path: String,
    pub files: u64,
    pub bytes: u64,
    pub last_seen_ms: u64,
    /// BLAKE3 of the client's key (`crate::clients`); `None` for a row from before keys.
    pub key_hash: Option<Hash>,
}

impl ClientRecord {
    pub(crate) fn status(&self, now_ms: u64) -> ClientStatus {
        ClientStatus {
            id: self.id.clone(),
            addr: self.addr.clone(),
            revision: self.revision,
            path: self.path.clone(),
            files: self.files,
            bytes: self.bytes,
            last_seen_ms: now_ms.saturating_sub(self.last_seen_ms),
            pinned: None,
        }
    }
}

/// The liveness thresholds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Liveness {
    pub stale_after: Duration,
    pub dead_after: Duration,
}

impl Liveness {
    /// `live` below `stale_after`, `dead` from `dead_after`, `stale` in between.
    pub(crate) fn state(&self, last_seen_ms: u64, now_ms: u64) -> SlaveState {
        let age = u128::from(now_ms.saturating_sub(last_seen_ms));
        if age >= self.dead_after.as_millis() {
            SlaveState::Dead
        } else if age >= self.stale_after.as_millis() {
            SlaveState::Stale
        } else {
            SlaveState::Live
        }
    }
}

/// Slaves and clients, by id.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    pub slaves: BTreeMap<String, SlaveRecord>,
    pub clients: BTreeMap<String, ClientRecord>,
    /// The state each slave was last seen in by the background observer (for transition logs).
    pub observed: BTreeMap<String, SlaveState>,
    /// When each (client, slave) bad-slave report last counted (`crate::clients`).
    pub bad_slave_counted: HashMap<(String, String), u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slave(hashlist: Option<HashlistVersion>) -> SlaveRecord {
        SlaveRecord {
            id: "s1".into(),
            url: "http://s1.example:7071".into(),
            quota: None,
            used: 0,
            replicating: 0,
            last_seen_ms: 0,
            packs: HashSet::from([1, 2, 3]),
            foreign: HashSet::from([Hash::of(b"x")]),
            foreign_as_of: 4,
            hashlist,
            vetting: Vetting::Accepted,
            draining: false,
            served: None,
            egress: None,
        }
    }

    fn changes(epoch: u64, base: u64, seq: u64) -> HashlistChanges {
        HashlistChanges {
            epoch,
            base,
            seq,
            added: vec![],
            removed: vec![],
        }
    }

    #[test]
    fn changes_apply_on_their_base_or_over_an_unanswered_attempt() {
        let held = HashlistVersion { epoch: 7, seq: 3 };
        let s = slave(Some(held));
        // On the version held: with changes, or a heartbeat with nothing new.
        assert_eq!(s.check_changes(&changes(7, 3, 4)), Ok(()));
        assert_eq!(s.check_changes(&changes(7, 3, 3)), Ok(()));
        // Seq 3 was applied from base 2 but its answer lost: the next attempt from base 2, or
        // the same request delivered twice, applies over it.
        assert_eq!(s.check_changes(&changes(7, 2, 5)), Ok(()));
        assert_eq!(s.check_changes(&changes(7, 2, 3)), Ok(()));
        // A late request older than the one applied, or from an earlier epoch.
        let stale = HashlistRefusal::Stale { held };
        assert_eq!(s.check_changes(&changes(7, 1, 2)), Err(stale));
        assert_eq!(s.check_changes(&changes(6, 3, 4)), Err(stale));
        assert!(!stale.forgets_version());
        // A base never acknowledged, or a seq below its base.
        for (base, seq) in [(4, 5), (3, 2)] {
            let r = s.check_changes(&changes(7, base, seq));
            let refusal = HashlistRefusal::OutOfSequence { held, base, seq };
            assert_eq!(r, Err(refusal));
            assert!(refusal.forgets_version());
        }
        // A master that holds no version (restarted) takes no changes.
        assert_eq!(
            slave(None).check_changes(&changes(7, 3, 4)),
            Err(HashlistRefusal::NoVersion)
        );
    }

    #[test]
    fn changes_are_refused_when_counts_disagree_or_unknown_hashes_may_be_packs() {
        let s = slave(Some(HashlistVersion { epoch: 7, seq: 3 }));
        let c = changes(7, 3, 4);
        let add = ReplicaChange {
            add: vec![4],
            ..ReplicaChange::default()
        };
        // Three packs and one unknown hash, plus one: five.
        assert_eq!(s.accepts(&c, &add, 5, 4), Ok(()));
        let mismatch = HashlistRefusal::CountMismatch {
            master: 5,
            slave: 4,
        };
        assert_eq!(s.accepts(&c, &add, 4, 4), Err(mismatch));
        assert!(mismatch.forgets_version());
        // Packs were published since the unknown hash was looked up.
        assert_eq!(
            s.accepts(&c, &add, 5, 5),
            Err(HashlistRefusal::PacksPublished)
        );
        assert!(HashlistRefusal::PacksPublished.forgets_version());
        let mut known_only = s.clone();
        known_only.foreign.clear();
        assert_eq!(known_only.accepts(&c, &add, 4, 9), Ok(()));
        assert_eq!(
            s.accepts(&changes(7, 4, 5), &add, 5, 4),
            Err(HashlistRefusal::OutOfSequence {
                held: HashlistVersion { epoch: 7, seq: 3 },
                base: 4,
                seq: 5
            }),
            "the version is checked first"
        );
    }

    #[test]
    fn replica_changes_remove_then_add_and_count_before_applying() {
        let (x, y) = (Hash::of(b"x"), Hash::of(b"y"));
        let mut s = slave(None);
        // Pack 2 reported corrupt, then fetched again; 3 and x dropped; 4 and y fetched.
        let corrupt = ReplicaChange {
            remove: vec![2, 5],
            ..ReplicaChange::default()
        };
        let delta = ReplicaChange {
            remove: vec![3],
            remove_foreign: vec![x],
            add: vec![2, 4, 4],
            add_foreign: vec![y],
        };
        let combined = corrupt.then(delta);
        assert!(!combined.is_empty());
        assert_eq!(s.count_after(&combined), 4);
        assert_eq!(
            s.packs,
            HashSet::from([1, 2, 3]),
            "counting changes nothing"
        );
        s.apply(&combined);
        assert_eq!(s.packs, HashSet::from([1, 2, 4]));
        assert_eq!(s.foreign, HashSet::from([y]));
        // A later removal undoes an earlier addition.
        let c = ReplicaChange {
            add: vec![9],
            ..ReplicaChange::default()
        }
        .then(ReplicaChange {
            remove: vec![9],
            ..ReplicaChange::default()
        });
        assert_eq!(s.count_after(&c), 4);
        assert!(ReplicaChange::default().is_empty());
    }

    #[test]
    fn states_follow_heartbeat_age() {
        let l = Liveness {
            stale_after: Duration::from_secs(30),
            dead_after: Duration::from_secs(600),
        };
        let now = 1_000_000_000;
        assert_eq!(l.state(now, now), SlaveState::Live);
        assert_eq!(l.state(now - 29_999, now), SlaveState::Live);
        assert_eq!(l.state(now - 30_000, now), SlaveState::Stale);
        assert_eq!(l.state(now - 599_999, now), SlaveState::Stale);
        assert_eq!(l.state(now - 600_000, now), SlaveState::Dead);
        // A clock step backwards never makes a slave look older.
        assert_eq!(l.state(now + 5, now), SlaveState::Live);
    }

    #[test]
    fn egress_is_the_served_bytes_over_the_time_between_heartbeats() {
        let mut s = slave(None);
        s.record_served(Some(1_000), 10_000);
        assert_eq!(s.egress, None);
        s.record_served(Some(3_000), 10_500);
        assert_eq!(s.egress, Some(4_000));
        // The slave restarted (its count went down): no figure until the next heartbeat.
        s.record_served(Some(10), 11_000);
        assert_eq!(s.egress, None);
        s.record_served(Some(10), 12_000);
        assert_eq!(s.egress, Some(0));
        // An older slave sends none.
        s.record_served(None, 13_000);
        assert_eq!((s.served, s.egress), (None, None));
    }
}
