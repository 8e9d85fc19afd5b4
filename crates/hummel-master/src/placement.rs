//! Placement: which slaves should hold which pack, by rendezvous hashing.
//!
//! For every pack, each candidate slave gets the score `BLAKE3(pack hash ‖ slave id)` (first 8
//! bytes, little endian); the `replication` highest-scoring slaves are its targets. A slave that
//! does not hold the pack yet is skipped when its reported usage plus the bytes already planned
//! for it plus the pack would exceed its quota. Packs are visited in pack-number order, so the
//! result is deterministic and stable: adding a slave moves only the packs it now wins.
//!
//! A **draining** candidate (the admin is retiring it) is never a target: its packs go to the
//! best-scoring non-draining slaves, so that each gets `replication` copies without it. Its
//! drain is complete ([`drained`]) when every pack of the revision it holds has that many
//! copies on non-draining candidates; until then it still serves the packs that do not
//! ([`serves_while_draining`]).
//!
//! This module is pure: the caller chooses the candidates (non-dead, non-embedded slaves) and
//! turns a [`Placement`] into directives and status figures.

use std::collections::HashSet;

use hummel_core::Hash;

/// A pack to place.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PackSlot {
    pub number: u32,
    pub hash: Hash,
    pub size: u64,
}

/// A slave that may receive packs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Candidate<'a> {
    pub id: &'a str,
    pub quota: Option<u64>,
    pub used: u64,
    pub holds: &'a HashSet<u32>,
    /// Being drained: never a target, and its copies do not count.
    pub draining: bool,
}

/// The result: per candidate (same order as given), the packs it should hold but does not.
#[derive(Debug, Default)]
pub(crate) struct Placement {
    /// Positions into the pack list, ascending.
    pub pending: Vec<Vec<usize>>,
    /// Bytes of `pending`, per candidate.
    pub pending_bytes: Vec<u64>,
}

/// The rendezvous score of `slave_id` for `pack`.
pub(crate) fn score(pack: &Hash, slave_id: &str) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(pack.as_bytes());
    h.update(slave_id.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// Chooses up to `replication` targets per pack. CPU-bound: packs × candidates hashes.
pub(crate) fn place(
    packs: &[PackSlot],
    candidates: &[Candidate<'_>],
    replication: u32,
) -> Placement {
    let mut out = Placement {
        pending: vec![Vec::new(); candidates.len()],
        pending_bytes: vec![0; candidates.len()],
    };
    let want = replication as usize;
    if want == 0 || candidates.is_empty() {
        return out;
    }
    let mut ranked: Vec<(u64, usize)> = Vec::with_capacity(candidates.len());
    for (pos, pack) in packs.iter().enumerate() {
        ranked.clear();
        ranked.extend(
            candidates
                .iter()
                .enumerate()
                .filter(|(_, c)| !c.draining)
                .map(|(i, c)| (score(&pack.hash, c.id), i)),
        );
        // Highest score first; ties (practically impossible) broken by slave id.
        ranked.sort_unstable_by(|a, b| {
            b.0.cmp(&a.0)
                .then_with(|| candidates[a.1].id.cmp(candidates[b.1].id))
        });
        let mut chosen = 0;
        for &(_, i) in &ranked {
            if chosen == want {
                break;
            }
            let c = &candidates[i];
            if c.holds.contains(&pack.number) {
                chosen += 1;
                continue;
            }
            let fits = c.quota.is_none_or(|q| {
                c.used
                    .saturating_add(out.pending_bytes[i])
                    .saturating_add(pack.size)
                    <= q
            });
            if fits {
                out.pending[i].push(pos);
                out.pending_bytes[i] += pack.size;
                chosen += 1;
            }
        }
    }
    out
}

/// Whether draining candidate `who`'s drain is complete: every pack of `packs` it holds has at
/// least `replication` copies on non-draining candidates. With fewer non-draining candidates
/// than `replication` it never is (removing it would lose copies). CPU: its packs × candidates.
pub(crate) fn drained(
    packs: &[PackSlot],
    candidates: &[Candidate<'_>],
    who: usize,
    replication: u32,
) -> bool {
    let holds = candidates[who].holds;
    packs
        .iter()
        .filter(|p| holds.contains(&p.number))
        .all(|p| copies_elsewhere(candidates, p.number) >= replication as usize)
}

/// Copies of pack `number` on non-draining candidates.
fn copies_elsewhere(candidates: &[Candidate<'_>], number: u32) -> usize {
    candidates
        .iter()
        .filter(|c| !c.draining && c.holds.contains(&number))
        .count()
}

/// Whether clients may still be sent to a draining slave for a pack that has `copies_elsewhere`
/// usable copies on non-draining slaves: only while there are fewer than `replication`.
pub(crate) fn serves_while_draining(copies_elsewhere: usize, replication: u32) -> bool {
    copies_elsewhere < (replication as usize).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packs(n: u32, size: u64) -> Vec<PackSlot> {
        (0..n)
            .map(|i| PackSlot {
                number: i + 1,
                hash: Hash::of(&i.to_le_bytes()),
                size,
            })
            .collect()
    }

    #[test]
    fn each_pack_goes_to_r_distinct_slaves() {
        let none = HashSet::new();
        let ids = ["a", "b", "c", "d", "e"];
        let cands: Vec<_> = ids
            .iter()
            .map(|id| Candidate {
                id,
                quota: None,
                used: 0,
                holds: &none,
                draining: false,
            })
            .collect();
        let ps = packs(200, 10);
        let p = place(&ps, &cands, 2);
        let mut per_pack = vec![0; ps.len()];
        for list in &p.pending {
            let unique: HashSet<_> = list.iter().collect();
            assert_eq!(unique.len(), list.len());
            for &i in list {
                per_pack[i] += 1;
            }
        }
        assert!(per_pack.iter().all(|&n| n == 2));
        // Load is spread: every slave gets a fair share (expected 80 of 400).
        assert!(
            p.pending.iter().all(|l| l.len() > 40),
            "{:?}",
            p.pending_bytes
        );
    }

    #[test]
    fn held_packs_count_and_placement_is_stable() {
        let none = HashSet::new();
        fn cands<'a>(holds_a: &'a HashSet<u32>, none: &'a HashSet<u32>) -> Vec<Candidate<'a>> {
            vec![
                Candidate {
                    id: "a",
                    quota: None,
                    used: 0,
                    holds: holds_a,
                    draining: false,
                },
                Candidate {
                    id: "b",
                    quota: None,
                    used: 0,
                    holds: none,
                    draining: false,
                },
                Candidate {
                    id: "c",
                    quota: None,
                    used: 0,
                    holds: none,
                    draining: false,
                },
            ]
        }
        let ps = packs(50, 10);
        let first = place(&ps, &cands(&none, &none), 1);
        let all_of_a: HashSet<u32> = first.pending[0].iter().map(|&i| ps[i].number).collect();
        let second = place(&ps, &cands(&all_of_a, &none), 1);
        assert!(second.pending[0].is_empty());
        assert_eq!(first.pending[1], second.pending[1]);
        assert_eq!(first.pending[2], second.pending[2]);
    }

    #[test]
    fn quota_is_respected() {
        let none = HashSet::new();
        let cands = [
            Candidate {
                id: "small",
                quota: Some(100),
                used: 30,
                holds: &none,
                draining: false,
            },
            Candidate {
                id: "big",
                quota: None,
                used: 0,
                holds: &none,
                draining: false,
            },
        ];
        let ps = packs(100, 10);
        let p = place(&ps, &cands, 2);
        assert!(30 + p.pending_bytes[0] <= 100);
        assert_eq!(p.pending[0].len(), 7);
        assert_eq!(p.pending[1].len(), 100);
    }

    #[test]
    fn zero_replication_or_no_candidates_places_nothing() {
        let none = HashSet::new();
        let c = [Candidate {
            id: "a",
            quota: None,
            used: 0,
            holds: &none,
            draining: false,
        }];
        assert!(place(&packs(3, 1), &c, 0).pending[0].is_empty());
        assert!(place(&packs(3, 1), &[], 2).pending.is_empty());
    }

    #[test]
    fn a_draining_slave_gets_nothing_and_its_packs_go_elsewhere() {
        let ps = packs(60, 10);
        let all: HashSet<u32> = ps.iter().map(|p| p.number).collect();
        let none = HashSet::new();
        let cand = |id: &'static str, holds: &'static HashSet<u32>, draining| Candidate {
            id,
            quota: None,
            used: 0,
            holds,
            draining,
        };
        let all: &'static HashSet<u32> = Box::leak(Box::new(all));
        let none: &'static HashSet<u32> = Box::leak(Box::new(none));
        // "a" holds everything and drains; b, c, d hold nothing yet.
        let cands = [
            cand("a", all, true),
            cand("b", none, false),
            cand("c", none, false),
            cand("d", none, false),
        ];
        let p = place(&ps, &cands, 2);
        assert!(p.pending[0].is_empty());
        let mut per_pack = vec![0; ps.len()];
        for list in &p.pending[1..] {
            for &i in list {
                per_pack[i] += 1;
            }
        }
        // Each pack gets two copies on the others, its copy on "a" not counted.
        assert!(per_pack.iter().all(|&n| n == 2), "{per_pack:?}");
        assert!(!drained(&ps, &cands, 0, 2));
        assert!(serves_while_draining(0, 2));

        // Once the others fetched their share, the drain is complete.
        let held: Vec<HashSet<u32>> = p.pending[1..]
            .iter()
            .map(|l| l.iter().map(|&i| ps[i].number).collect())
            .collect();
        let held: &'static [HashSet<u32>] = Box::leak(held.into_boxed_slice());
        let after = [
            cand("a", all, true),
            cand("b", &held[0], false),
            cand("c", &held[1], false),
            cand("d", &held[2], false),
        ];
        assert!(place(&ps, &after, 2).pending.iter().all(Vec::is_empty));
        assert!(drained(&ps, &after, 0, 2));
        assert!(!serves_while_draining(2, 2));

        // With one copy short (a pack lost on "b"), it is not drained: it still serves it.
        let mut short = held[0].clone();
        let lost = *short.iter().next().unwrap();
        short.remove(&lost);
        let short: &'static HashSet<u32> = Box::leak(Box::new(short));
        let partial = [
            cand("a", all, true),
            cand("b", short, false),
            cand("c", &held[1], false),
            cand("d", &held[2], false),
        ];
        assert!(!drained(&ps, &partial, 0, 2));
    }

    #[test]
    fn a_drain_never_ends_without_enough_other_slaves() {
        let ps = packs(5, 10);
        let all: HashSet<u32> = ps.iter().map(|p| p.number).collect();
        let cands = [
            Candidate {
                id: "a",
                quota: None,
                used: 0,
                holds: &all,
                draining: true,
            },
            Candidate {
                id: "b",
                quota: None,
                used: 0,
                holds: &all,
                draining: false,
            },
        ];
        // Replication 2 with one other slave: removing "a" would leave one copy.
        assert!(!drained(&ps, &cands, 0, 2));
        assert!(drained(&ps, &cands, 0, 1));
        // A slave holding nothing of the revision is drained at once.
        let none = HashSet::new();
        let empty = [Candidate {
            id: "e",
            quota: None,
            used: 0,
            holds: &none,
            draining: true,
        }];
        assert!(drained(&ps, &empty, 0, 2));
    }
}
