//! Placement: which slaves should hold which pack, by rendezvous hashing.
//!
//! For every pack, each candidate slave gets the score `BLAKE3(pack hash ‖ slave id)` (first 8
//! bytes, little endian); the `replication` highest-scoring slaves are its targets. A slave that
//! does not hold the pack yet is skipped when its reported usage plus the bytes already planned
//! for it plus the pack would exceed its quota. Packs are visited in pack-number order, so the
//! result is deterministic and stable: adding a slave moves only the packs it now wins.
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
                },
                Candidate {
                    id: "b",
                    quota: None,
                    used: 0,
                    holds: none,
                },
                Candidate {
                    id: "c",
                    quota: None,
                    used: 0,
                    holds: none,
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
            },
            Candidate {
                id: "big",
                quota: None,
                used: 0,
                holds: &none,
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
        }];
        assert!(place(&packs(3, 1), &c, 0).pending[0].is_empty());
        assert!(place(&packs(3, 1), &[], 2).pending.is_empty());
    }
}
