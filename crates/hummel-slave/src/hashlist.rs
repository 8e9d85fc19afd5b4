//! [`HashlistLog`]: the slave's hashlist as the master acknowledged it, and what changed since
//! (plain data, no I/O).
//!
//! When the master accepts a complete hashlist it names a [`HashlistVersion`]. From then on
//! every change the worker sees — a verified fetch, a dropped pack, a pack scrub quarantined —
//! is recorded here by pack and state, and the next heartbeat carries them as
//! [`HashlistChanges`] against the acknowledged version.
//!
//! The changes list every pack touched since that version by its state now, and are forgotten
//! only when the master answers with exactly the version they proposed. So an attempt whose
//! answer was lost is sent again, grown, from the same base, with a higher `seq`, and the master
//! can apply it over the lost one. Any other answer means the master holds no version these
//! changes fit: the log forgets its version and the worker announces the complete hashlist.
//! So do more than [`MAX_HASHLIST_CHANGES`] unreported changes, and a master that names no
//! version (one from before incremental hashlists).

use std::collections::{BTreeMap, HashSet};

use hummel_core::Hash;
use hummel_proto::api::{HashlistChanges, HashlistVersion, MAX_HASHLIST_CHANGES};

/// The acknowledged version of the slave's hashlist and the changes since.
#[derive(Debug, Default)]
pub(crate) struct HashlistLog {
    /// The version the master acknowledged; `None` before it accepted a complete hashlist,
    /// after it refused changes, or when it takes none.
    acked: Option<HashlistVersion>,
    /// The highest `seq` proposed in the acknowledged epoch.
    proposed: u64,
    /// Packs held as recorded: the complete hashlist last sent, with the changes since.
    held: HashSet<Hash>,
    /// Packs whose state changed since `acked`, by their state now (`true`: held).
    changed: BTreeMap<Hash, bool>,
}

impl HashlistLog {
    /// A complete hashlist of `packs` is being sent: it is the new starting point, with no
    /// version until the master accepts it.
    pub(crate) fn restart(&mut self, packs: impl IntoIterator<Item = Hash>) {
        self.held = packs.into_iter().collect();
        self.changed.clear();
        self.acked = None;
        self.proposed = 0;
    }

    /// The master accepted the complete hashlist and named `version` (`None`: it takes no
    /// changes; every change needs a complete hashlist).
    pub(crate) fn announced(&mut self, version: Option<HashlistVersion>) {
        self.acked = version;
        self.proposed = version.map_or(0, |v| v.seq);
    }

    /// Records that `pack` is now held or not. Returns false if the change cannot travel in a
    /// heartbeat: there is no acknowledged version, or too many changes are unreported. The
    /// caller then announces the complete hashlist.
    pub(crate) fn record(&mut self, pack: Hash, held: bool) -> bool {
        if held {
            self.held.insert(pack);
        } else {
            self.held.remove(&pack);
        }
        self.changed.insert(pack, held);
        if self.changed.len() > MAX_HASHLIST_CHANGES {
            self.acked = None;
        }
        self.acked.is_some()
    }

    /// Drops the acknowledged version: the caller announces the complete hashlist.
    pub(crate) fn forget(&mut self) {
        self.acked = None;
    }

    /// True if changes are sent with heartbeats (the master acknowledged a version).
    pub(crate) fn is_tracking(&self) -> bool {
        self.acked.is_some()
    }

    /// True if there are changes the master has not acknowledged.
    pub(crate) fn has_changes(&self) -> bool {
        self.acked.is_some() && !self.changed.is_empty()
    }

    /// Packs held as recorded.
    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }

    /// What the next heartbeat carries: every change since the acknowledged version under a new
    /// `seq`, or none under the acknowledged `seq` (so the master can say it forgot us).
    /// `None` without an acknowledged version, or when the acknowledged version is at the end
    /// of the sequence (only a master naming such a version gets there): the log then forgets
    /// it, and the caller announces the complete hashlist.
    pub(crate) fn changes(&mut self) -> Option<HashlistChanges> {
        let acked = self.acked?;
        let seq = if self.changed.is_empty() {
            acked.seq
        } else {
            let Some(next) = self.proposed.max(acked.seq).checked_add(1) else {
                self.acked = None;
                return None;
            };
            self.proposed = next;
            next
        };
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        for (&pack, &held) in &self.changed {
            if held {
                added.push(pack);
            } else {
                removed.push(pack);
            }
        }
        Some(HashlistChanges {
            epoch: acked.epoch,
            base: acked.seq,
            seq,
            added,
            removed,
        })
    }

    /// The master answered the heartbeat that carried `sent`, naming `version`. Returns true if
    /// it applied them (it names the version they proposed); their changes are then forgotten
    /// unless they changed again since. Otherwise the log forgets its version and the caller
    /// announces the complete hashlist.
    pub(crate) fn answered(
        &mut self,
        sent: &HashlistChanges,
        version: Option<HashlistVersion>,
    ) -> bool {
        if version != Some(sent.proposed()) || self.acked != Some(sent.base_version()) {
            self.acked = None;
            return false;
        }
        self.acked = version;
        for (packs, state) in [(&sent.added, true), (&sent.removed, false)] {
            for pack in packs {
                if self.changed.get(pack) == Some(&state) {
                    self.changed.remove(pack);
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What the worker and the master's answers do to the log.
    #[derive(Clone, Debug)]
    enum Op {
        Restart(Vec<u8>),
        Announced(Option<(u64, u64)>),
        Record(u8, bool),
        Send,
        /// The answer to the last changes sent: the version they proposed, or any other.
        Answer(Option<Option<(u64, u64)>>),
        Forget,
    }

    fn number() -> impl Strategy<Value = u64> {
        prop_oneof![0..4u64, Just(u64::MAX), Just(u64::MAX - 1), any::<u64>()]
    }

    fn version() -> impl Strategy<Value = Option<(u64, u64)>> {
        proptest::option::of((number(), number()))
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..4).prop_map(Op::Restart),
            version().prop_map(Op::Announced),
            (any::<u8>(), any::<bool>()).prop_map(|(p, h)| Op::Record(p, h)),
            Just(Op::Send),
            proptest::option::of(version()).prop_map(Op::Answer),
            Just(Op::Forget),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Whatever the master answers (its directives are untrusted input), the log never
        /// panics, and the changes it sends are well formed: a pack once, in one list, and a
        /// new `seq` above the base whenever something changed.
        #[test]
        fn any_answer_leaves_the_log_consistent(ops in proptest::collection::vec(op(), 1..40)) {
            let mut log = HashlistLog::default();
            let mut sent: Option<HashlistChanges> = None;
            let v = |x: Option<(u64, u64)>| x.map(|(epoch, seq)| HashlistVersion { epoch, seq });
            for op in ops {
                match op {
                    Op::Restart(packs) => log.restart(packs.into_iter().map(|p| h(p.into()))),
                    Op::Announced(x) => log.announced(v(x)),
                    Op::Record(p, held) => {
                        log.record(h(p.into()), held);
                    }
                    Op::Send => {
                        if let Some(c) = log.changes() {
                            let added: HashSet<&Hash> = c.added.iter().collect();
                            prop_assert!(c.removed.iter().all(|r| !added.contains(r)));
                            prop_assert!(c.seq >= c.base);
                            if !c.added.is_empty() || !c.removed.is_empty() {
                                prop_assert!(c.seq > c.base);
                            }
                            prop_assert!(c.added.len() + c.removed.len() <= MAX_HASHLIST_CHANGES);
                            sent = Some(c);
                        }
                    }
                    Op::Answer(answer) => {
                        if let Some(c) = sent.take() {
                            let version = answer.map_or(Some(c.proposed()), v);
                            let applied = log.answered(&c, version);
                            prop_assert!(!applied || version == Some(c.proposed()));
                            prop_assert_eq!(log.is_tracking(), applied);
                        }
                    }
                    Op::Forget => log.forget(),
                }
            }
        }
    }

    /// The property above found it: a directive naming seq u64::MAX made the next change
    /// overflow (a panic in a debug build). The log now gives the version up instead, and the
    /// slave announces its complete hashlist.
    #[test]
    fn a_version_at_the_end_of_the_sequence_is_given_up() {
        let mut log = HashlistLog::default();
        log.restart([h(1)]);
        log.announced(v(7, u64::MAX));
        assert!(log.record(h(2), true));
        assert!(log.changes().is_none());
        assert!(!log.is_tracking());
    }

    fn h(n: u32) -> Hash {
        Hash::of(&n.to_le_bytes())
    }

    fn v(epoch: u64, seq: u64) -> Option<HashlistVersion> {
        Some(HashlistVersion { epoch, seq })
    }

    #[test]
    fn changes_travel_against_the_acknowledged_version() {
        let mut log = HashlistLog::default();
        log.restart([h(1), h(2)]);
        // Nothing to send before the master accepts the complete hashlist.
        assert!(!log.record(h(3), true));
        assert!(log.changes().is_none());
        log.restart([h(1), h(2), h(3)]);
        log.announced(v(7, 0));
        assert!(!log.has_changes());
        // Nothing new: the heartbeat still names the version, so a restarted master can say so.
        let idle = log.changes().unwrap();
        assert_eq!((idle.base, idle.seq), (0, 0));
        assert!(idle.added.is_empty() && idle.removed.is_empty());
        assert!(log.answered(&idle, v(7, 0)));

        assert!(log.record(h(4), true));
        assert!(log.record(h(1), false));
        assert!(log.has_changes());
        let sent = log.changes().unwrap();
        assert_eq!((sent.epoch, sent.base, sent.seq), (7, 0, 1));
        assert_eq!(sent.added, vec![h(4)]);
        assert_eq!(sent.removed, vec![h(1)]);
        assert_eq!(log.len(), 3);
        assert!(log.answered(&sent, v(7, 1)));
        assert!(!log.has_changes());
        assert_eq!(log.changes().unwrap().base, 1);
    }

    #[test]
    fn an_unanswered_attempt_is_repeated_grown_from_the_same_base() {
        let mut log = HashlistLog::default();
        log.restart([h(1)]);
        log.announced(v(7, 0));
        log.record(h(2), true);
        let lost = log.changes().unwrap();
        assert_eq!((lost.base, lost.seq), (0, 1));
        // No answer (timeout): nothing is forgotten. Meanwhile 2 is dropped again, 3 fetched.
        log.record(h(2), false);
        log.record(h(3), true);
        let retry = log.changes().unwrap();
        assert_eq!((retry.base, retry.seq), (0, 2));
        assert_eq!(retry.added, vec![h(3)]);
        assert_eq!(retry.removed, vec![h(2)]);
        // A change recorded while the answer was on its way stays for the next heartbeat.
        log.record(h(3), false);
        assert!(log.answered(&retry, v(7, 2)));
        let next = log.changes().unwrap();
        assert_eq!((next.base, next.seq), (2, 3));
        assert_eq!((next.added, next.removed), (vec![], vec![h(3)]));
    }

    #[test]
    fn any_other_answer_asks_for_the_complete_hashlist() {
        for answer in [None, v(7, 0), v(7, 2), v(8, 1)] {
            let mut log = HashlistLog::default();
            log.restart([]);
            log.announced(v(7, 0));
            log.record(h(1), true);
            let sent = log.changes().unwrap();
            assert!(!log.answered(&sent, answer), "{answer:?}");
            assert!(!log.is_tracking());
            assert!(log.changes().is_none());
            assert!(!log.record(h(2), true));
        }
        // A master without incremental hashlists names no version: complete hashlists only.
        let mut log = HashlistLog::default();
        log.restart([h(1)]);
        log.announced(None);
        assert!(!log.record(h(2), true));
        assert!(log.changes().is_none());
        log.restart([h(1), h(2)]);
        log.announced(v(9, 0));
        log.forget();
        assert!(!log.is_tracking());
    }

    #[test]
    fn too_many_unreported_changes_fall_back_to_the_complete_hashlist() {
        let mut log = HashlistLog::default();
        log.restart([]);
        log.announced(v(7, 0));
        for n in 0..MAX_HASHLIST_CHANGES as u32 {
            assert!(log.record(h(n), true));
        }
        let full = log.changes().unwrap();
        assert_eq!(full.added.len(), MAX_HASHLIST_CHANGES);
        // The same pack again is no new change.
        assert!(log.record(h(0), true));
        assert!(!log.record(h(u32::MAX), true));
        assert!(!log.is_tracking());
        assert_eq!(log.len(), MAX_HASHLIST_CHANGES + 1);
    }
}
