//! The tree digest: a Merkle tree of directory digests over an [`Index`], so that a signature
//! over one 32-byte digest of a whole revision also vouches for any subtree of it and for an
//! index rebuilt from a delta.
//!
//! # Tree format 1
//!
//! `H` is BLAKE3; integers are little-endian.
//!
//! ```text
//! file digest  H("hummel file v1\0" | size u64 | mode u32 | mtime_ns i64 | hash
//!                | chunk count u64 | per chunk, in file order:
//!                  id | len u32 | codec u8 | stored_len u32 | offset u64
//!                  | pack number u32 | pack hash | pack size u64)
//! leaf         H(0x00 | name length u32 | name | digest of the child)
//! node         H(0x01 | left | right)
//! children     RFC 6962's Merkle tree hash over the leaves of a directory's children,
//!              sorted by name: one leaf is itself; n > 1 leaves split at the largest
//!              power of two below n; no children: 32 zero bytes
//! dir digest   H("hummel dir v1\0" | mode u32 | child count u64 | children)
//! root         the dir digest of the top-level entries, with mode 0
//! tree digest  H("hummel tree v1\0" | chunker min u32 | avg u32 | max u32 | root)
//! ```
//!
//! Everything a client relies on is covered: every path, kind, mode, size, mtime and file
//! hash, and where each chunk lives (pack number, hash and size included), whatever order the
//! chunk and pack tables have. A later index section is added with a new tree format whose
//! tree digest also covers that section's digest; statements name their tree format, and a
//! client refuses one it does not know.
//!
//! # Tree format 2
//!
//! Format 1 with the index's info section (name, description, sets: [`crate::info`]) covered:
//!
//! ```text
//! tree digest  H("hummel tree v2\0" | chunker min u32 | avg u32 | max u32 | root
//!                | info digest)
//! ```
//!
//! The info section travels with every subtree index, so a subtree's proof climbs to the
//! root as in format 1 and the client hashes the info it received. A format-1 statement is
//! still verified, for an index whose info section is empty.
//!
//! A subtree `a/b` is proven by a [`SubtreeProof`]: for `b`, then `a`, the directory's own mode,
//! its position among its parent's children, their count, and the audit path (RFC 6962) from
//! its leaf to the parent's children hash. The client computes `b`'s children hash from the
//! subtree index it received, climbs the path and compares the tree digest with the signed one.
//! The proof costs about `32 × log2(siblings)` bytes per level.
//!
//! # Proof format 1 (`HUMLPRF\0`)
//!
//! `"HUMLPRF\0" | u32 format version = 1 | postcard(SubtreeProof)`, at most [`MAX_PROOF`]
//! bytes; as text (an HTTP header), lower-case hex of those bytes.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::index::{EntryKind, FileEntry, Index};
use crate::{ChunkerConfig, Hash, RelPath};

/// The tree format this code computes (and signs); it verifies this one and [`TREE_FORMAT_V1`].
pub const TREE_FORMAT: u32 = 2;
/// The first tree format, which covers no info section: still verified.
pub const TREE_FORMAT_V1: u32 = 1;
/// The tree formats this code verifies.
pub const TREE_FORMATS: &[u32] = &[TREE_FORMAT_V1, TREE_FORMAT];
/// First bytes of an encoded [`SubtreeProof`].
pub const PROOF_MAGIC: &[u8; 8] = b"HUMLPRF\0";
/// The proof format this code writes and reads.
pub const PROOF_FORMAT: u32 = 1;
/// Largest encoded proof a decoder accepts: a path of 2,048 levels each with 64 siblings
/// would be larger, but no index holds a directory of 2^64 entries; 1,024 levels of 24
/// siblings (16 million entries each) fit.
pub const MAX_PROOF: usize = 1 << 20;

const FILE_TAG: &[u8] = b"hummel file v1\0";
const DIR_TAG: &[u8] = b"hummel dir v1\0";
const TREE_TAG: &[u8] = b"hummel tree v1\0";
const TREE_TAG_V2: &[u8] = b"hummel tree v2\0";

/// Where one directory sits below its parent, for [`SubtreeProof`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofLevel {
    /// The directory's own mode.
    pub mode: u32,
    /// Its position among its parent's children (sorted by name).
    pub index: u64,
    /// How many children the parent has.
    pub count: u64,
    /// The audit path from its leaf to the parent's children hash, nearest sibling first.
    pub siblings: Vec<Hash>,
}

/// The path from a subtree to the root: one [`ProofLevel`] per component of the subtree's
/// path, the deepest first. The whole tree has an empty proof.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtreeProof {
    /// From the subtree's directory up to the top-level one.
    pub levels: Vec<ProofLevel>,
}

/// A proof or subtree that does not lead to the signed digest.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// Not a proof, truncated, too large, or of a format this build does not read.
    #[error("invalid subtree proof: {0}")]
    Invalid(String),
    /// The proof does not fit the subtree's path.
    #[error("the subtree proof does not fit {0}")]
    Shape(String),
    /// The index (or subtree) and proof lead to another tree digest than the signed one.
    #[error("the index does not match the signed tree digest (it leads to {got}, signed {want})")]
    Mismatch {
        /// What the received index leads to.
        got: Hash,
        /// What was signed.
        want: Hash,
    },
}

/// The digest of one file entry, its chunk locations resolved through `index`'s tables.
/// `index` must be validated.
pub fn file_digest(index: &Index, f: &FileEntry) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(FILE_TAG);
    h.update(&f.size.to_le_bytes());
    h.update(&f.mode.to_le_bytes());
    h.update(&f.mtime_ns.to_le_bytes());
    h.update(f.hash.as_bytes());
    h.update(&(f.chunks.len() as u64).to_le_bytes());
    let mut buf = [0u8; 32 + 4 + 1 + 4 + 8 + 4 + 32 + 8];
    for &ci in &f.chunks {
        let c = &index.chunks[ci as usize];
        let (pack_hash, pack_size) = index
            .pack(c.pack)
            .map_or(([0u8; 32], u64::MAX), |p| (p.hash.0, p.size));
        buf[0..32].copy_from_slice(c.hash.as_bytes());
        buf[32..36].copy_from_slice(&c.len.to_le_bytes());
        buf[36] = c.codec as u8;
        buf[37..41].copy_from_slice(&c.stored_len.to_le_bytes());
        buf[41..49].copy_from_slice(&c.offset.to_le_bytes());
        buf[49..53].copy_from_slice(&c.pack.to_le_bytes());
        buf[53..85].copy_from_slice(&pack_hash);
        buf[85..93].copy_from_slice(&pack_size.to_le_bytes());
        h.update(&buf);
    }
    h.finalize().into()
}

/// The leaf of a child named `name` with digest `digest`.
pub fn leaf_hash(name: &str, digest: &Hash) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[0]);
    h.update(&(name.len() as u32).to_le_bytes());
    h.update(name.as_bytes());
    h.update(digest.as_bytes());
    h.finalize().into()
}

fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[1]);
    h.update(left.as_bytes());
    h.update(right.as_bytes());
    h.finalize().into()
}

/// The largest power of two below `n` (`n > 1`).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// RFC 6962's Merkle tree hash over `leaves`; no leaves: 32 zero bytes.
pub fn children_hash(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Hash([0; 32]),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&children_hash(&leaves[..k]), &children_hash(&leaves[k..]))
        }
    }
}

/// The audit path of leaf `m` of `leaves` (RFC 6962 `PATH`), nearest sibling first.
pub fn audit_path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    let mut path = Vec::new();
    let (mut lo, mut hi, mut m) = (0usize, leaves.len(), m);
    // Top-down, collecting siblings; reversed at the end so the nearest comes first.
    while hi - lo > 1 {
        let k = split(hi - lo);
        if m < k {
            path.push(children_hash(&leaves[lo + k..hi]));
            hi = lo + k;
        } else {
            path.push(children_hash(&leaves[lo..lo + k]));
            lo += k;
            m -= k;
        }
    }
    path.reverse();
    path
}

/// The children hash that `leaf` at position `index` of `count` leaves leads to through
/// `path` (RFC 9162, 2.1.3.2); `None` when the path does not fit the position.
pub fn root_from_path(leaf: &Hash, index: u64, count: u64, path: &[Hash]) -> Option<Hash> {
    if index >= count {
        return None;
    }
    let (mut fnode, mut snode) = (index, count - 1);
    let mut r = *leaf;
    for p in path {
        if snode == 0 {
            return None;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    (snode == 0).then_some(r)
}

/// A directory's digest from its mode, child count and children hash.
pub fn dir_digest(mode: u32, count: u64, children: &Hash) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(DIR_TAG);
    h.update(&mode.to_le_bytes());
    h.update(&count.to_le_bytes());
    h.update(children.as_bytes());
    h.finalize().into()
}

/// The tree digest (format 1) from the chunker and the root directory's digest.
pub fn tree_digest_of(chunker: &ChunkerConfig, root: &Hash) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(TREE_TAG);
    h.update(&chunker.min.to_le_bytes());
    h.update(&chunker.avg.to_le_bytes());
    h.update(&chunker.max.to_le_bytes());
    h.update(root.as_bytes());
    h.finalize().into()
}

/// The tree digest (format 2) from the chunker, the root directory's digest and the info
/// section's digest.
pub fn tree_digest_v2(chunker: &ChunkerConfig, root: &Hash, info: &Hash) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(TREE_TAG_V2);
    h.update(&chunker.min.to_le_bytes());
    h.update(&chunker.avg.to_le_bytes());
    h.update(&chunker.max.to_le_bytes());
    h.update(root.as_bytes());
    h.update(info.as_bytes());
    h.finalize().into()
}

/// The tree digest of `format` over a root directory digest; `None` for a format this build
/// does not know, or format 1 over an index with an info section (format 1 does not cover it).
fn tree_digest_in(format: u32, index: &Index, root: &Hash) -> Option<Hash> {
    match format {
        TREE_FORMAT_V1 => index
            .info
            .is_empty()
            .then(|| tree_digest_of(&index.chunker, root)),
        TREE_FORMAT => Some(tree_digest_v2(&index.chunker, root, &index.info.digest())),
        _ => None,
    }
}

/// The digests of every directory of an index, and of its top level: what a master keeps per
/// revision to sign it and to prove its subtrees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeHashes {
    /// Directory path → its dir digest.
    dirs: HashMap<String, Hash>,
    /// The number of top-level entries.
    top_count: u64,
    /// The children hash of the top-level entries.
    top_children: Hash,
    /// The tree digest (format 2; the index taken as a whole tree: root mode 0).
    digest: Hash,
    /// The root directory's digest.
    root: Hash,
}

impl TreeHashes {
    /// Computes every directory digest of a validated `index`, bottom-up. CPU-bound (linear;
    /// every chunk location is hashed once).
    pub fn compute(index: &Index) -> TreeHashes {
        // Children per parent, in entry order, which is name order within one parent.
        let mut children: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut dirs_by_depth: Vec<(usize, usize)> = Vec::new();
        for (i, e) in index.entries.iter().enumerate() {
            let path = e.path.as_str();
            let parent = path.rfind('/').map_or("", |i| &path[..i]);
            children.entry(parent).or_default().push(i);
            if matches!(e.kind, EntryKind::Dir(_)) {
                dirs_by_depth.push((e.path.as_str().matches('/').count(), i));
            }
        }
        dirs_by_depth.sort_by_key(|d| std::cmp::Reverse(d.0));
        let mut dirs: HashMap<String, Hash> = HashMap::with_capacity(dirs_by_depth.len());
        let leaves_of = |list: Option<&Vec<usize>>, dirs: &HashMap<String, Hash>| -> Vec<Hash> {
            list.map(|l| l.as_slice())
                .unwrap_or(&[])
                .iter()
                .map(|&ci| {
                    let e = &index.entries[ci];
                    let digest = match &e.kind {
                        EntryKind::File(f) => file_digest(index, f),
                        EntryKind::Dir(_) => dirs[e.path.as_str()],
                    };
                    leaf_hash(e.path.file_name(), &digest)
                })
                .collect()
        };
        for (_, i) in dirs_by_depth {
            let e = &index.entries[i];
            let EntryKind::Dir(d) = &e.kind else {
                unreachable!("only directories are listed")
            };
            let leaves = leaves_of(children.get(e.path.as_str()), &dirs);
            let digest = dir_digest(d.mode, leaves.len() as u64, &children_hash(&leaves));
            dirs.insert(e.path.as_str().to_string(), digest);
        }
        let top = leaves_of(children.get(""), &dirs);
        let top_children = children_hash(&top);
        let top_count = top.len() as u64;
        let root = dir_digest(0, top_count, &top_children);
        TreeHashes {
            dirs,
            top_count,
            top_children,
            digest: tree_digest_v2(&index.chunker, &root, &index.info.digest()),
            root,
        }
    }

    /// The tree digest (format 2, [`TREE_FORMAT`]) of the index as a whole tree.
    pub fn digest(&self) -> Hash {
        self.digest
    }

    /// The tree digest of format 1 ([`TREE_FORMAT_V1`]), which does not cover the info
    /// section: what masters signed before format 2.
    pub fn digest_v1(&self, chunker: &ChunkerConfig) -> Hash {
        tree_digest_of(chunker, &self.root)
    }

    /// The digest of the directory `dir`, if the index has it.
    pub fn dir(&self, dir: &RelPath) -> Option<Hash> {
        self.dirs.get(dir.as_str()).copied()
    }

    /// The proof that the directory `dir` of `index` (the index these hashes were computed
    /// from) sits where it does in the tree; `None` when `dir` is not a directory of it.
    /// CPU-bound: lists the children of each ancestor.
    pub fn proof(&self, index: &Index, dir: &RelPath) -> Option<SubtreeProof> {
        let mut levels = Vec::new();
        let mut here = dir.clone();
        loop {
            let Some(EntryKind::Dir(d)) = index.get(&here).map(|e| &e.kind) else {
                return None;
            };
            let parent = here.parent();
            let siblings = children_of(index, parent.as_ref());
            let leaves: Vec<Hash> = siblings
                .iter()
                .map(|&i| {
                    let e = &index.entries[i];
                    let digest = match &e.kind {
                        EntryKind::File(f) => file_digest(index, f),
                        EntryKind::Dir(_) => self.dirs[e.path.as_str()],
                    };
                    leaf_hash(e.path.file_name(), &digest)
                })
                .collect();
            let at = siblings
                .iter()
                .position(|&i| index.entries[i].path == here)?;
            levels.push(ProofLevel {
                mode: d.mode,
                index: at as u64,
                count: leaves.len() as u64,
                siblings: audit_path(at, &leaves),
            });
            match parent {
                Some(p) => here = p,
                None => break,
            }
        }
        Some(SubtreeProof { levels })
    }
}

/// The positions of the direct children of `dir` (`None`: the top level) in `index`'s
/// entries, in name order.
fn children_of(index: &Index, dir: Option<&RelPath>) -> Vec<usize> {
    match dir {
        None => (0..index.entries.len())
            .filter(|&i| !index.entries[i].path.as_str().contains('/'))
            .collect(),
        Some(d) => {
            let prefix = format!("{}/", d.as_str());
            let start = index
                .entries
                .partition_point(|e| e.path.as_str() < prefix.as_str());
            index.entries[start..]
                .iter()
                .take_while(|e| e.path.as_str().starts_with(&prefix))
                .enumerate()
                .filter(|(_, e)| !e.path.as_str()[prefix.len()..].contains('/'))
                .map(|(k, _)| start + k)
                .collect()
        }
    }
}

/// The tree digest (format 2) that a received `index` of the subtree `root` (`None`: the whole
/// tree) leads to with `proof`. The index must be validated and rooted at `root`. CPU-bound
/// (linear in the index).
pub fn digest_through(
    index: &Index,
    root: Option<&RelPath>,
    proof: &SubtreeProof,
) -> Result<Hash, TreeError> {
    digest_through_format(index, root, proof, TREE_FORMAT)
}

/// [`digest_through`] in tree format `format`.
pub fn digest_through_format(
    index: &Index,
    root: Option<&RelPath>,
    proof: &SubtreeProof,
    format: u32,
) -> Result<Hash, TreeError> {
    let in_format = |root: &Hash| {
        tree_digest_in(format, index, root).ok_or_else(|| {
            TreeError::Invalid(if TREE_FORMATS.contains(&format) {
                format!("tree format {format} does not cover the index's info section")
            } else {
                format!("tree format {format} (this build knows {TREE_FORMATS:?})")
            })
        })
    };
    let hashes = TreeHashes::compute(index);
    let components: Vec<&str> = root.map(|r| r.components().collect()).unwrap_or_default();
    if components.len() != proof.levels.len() {
        return Err(TreeError::Shape(format!(
            "{} ({} levels for {} path components)",
            root.map_or("the whole tree", |r| r.as_str()),
            proof.levels.len(),
            components.len()
        )));
    }
    let Some(first) = proof.levels.first() else {
        return in_format(&hashes.root);
    };
    let mut digest = dir_digest(first.mode, hashes.top_count, &hashes.top_children);
    for (j, level) in proof.levels.iter().enumerate() {
        let name = components[components.len() - 1 - j];
        let leaf = leaf_hash(name, &digest);
        let children = root_from_path(&leaf, level.index, level.count, &level.siblings)
            .ok_or_else(|| {
                TreeError::Shape(format!(
                    "{} (position {} of {} with {} siblings)",
                    root.map_or("", |r| r.as_str()),
                    level.index,
                    level.count,
                    level.siblings.len()
                ))
            })?;
        let parent_mode = proof.levels.get(j + 1).map_or(0, |l| l.mode);
        digest = dir_digest(parent_mode, level.count, &children);
    }
    in_format(&digest)
}

/// Checks that `index` (of the subtree `root`, with `proof`) is the tree whose digest
/// (format 2) is `signed`.
pub fn verify(
    index: &Index,
    root: Option<&RelPath>,
    proof: &SubtreeProof,
    signed: &Hash,
) -> Result<(), TreeError> {
    verify_format(index, root, proof, TREE_FORMAT, signed)
}

/// [`verify`] in tree format `format` (what the statement names).
pub fn verify_format(
    index: &Index,
    root: Option<&RelPath>,
    proof: &SubtreeProof,
    format: u32,
    signed: &Hash,
) -> Result<(), TreeError> {
    let got = digest_through_format(index, root, proof, format)?;
    if got != *signed {
        return Err(TreeError::Mismatch { got, want: *signed });
    }
    Ok(())
}

/// Encodes a proof (format 1).
pub fn encode_proof(proof: &SubtreeProof) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + proof.levels.len() * 64);
    out.extend_from_slice(PROOF_MAGIC);
    out.extend_from_slice(&PROOF_FORMAT.to_le_bytes());
    postcard::to_extend(proof, out).expect("a proof serialises")
}

/// Decodes a proof; bounded by [`MAX_PROOF`], every trailing byte refused.
pub fn decode_proof(bytes: &[u8]) -> Result<SubtreeProof, TreeError> {
    let invalid = |m: String| TreeError::Invalid(m);
    if bytes.len() > MAX_PROOF {
        return Err(invalid(format!(
            "{} bytes (at most {MAX_PROOF})",
            bytes.len()
        )));
    }
    if bytes.len() < 12 || &bytes[..8] != PROOF_MAGIC {
        return Err(invalid("bad magic or truncated".into()));
    }
    let format = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if format != PROOF_FORMAT {
        return Err(invalid(format!(
            "format {format} (this build reads {PROOF_FORMAT})"
        )));
    }
    let (proof, rest): (SubtreeProof, &[u8]) =
        postcard::take_from_bytes(&bytes[12..]).map_err(|e| invalid(e.to_string()))?;
    if !rest.is_empty() {
        return Err(invalid("trailing bytes".into()));
    }
    for l in &proof.levels {
        // A path longer than 64 siblings describes no tree of u64 children.
        if l.siblings.len() > 64 || l.index >= l.count {
            return Err(invalid(format!(
                "position {} of {} with {} siblings",
                l.index,
                l.count,
                l.siblings.len()
            )));
        }
    }
    Ok(proof)
}

/// Lower-case hex of `bytes` (proofs and statements travel as text in HTTP headers and JSON).
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// The bytes of lower- or upper-case hex text; `None` for anything else (odd length
/// included), or beyond `max` bytes.
pub fn from_hex(text: &str, max: usize) -> Option<Vec<u8>> {
    let t = text.as_bytes();
    if !t.len().is_multiple_of(2) || t.len() / 2 > max {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    t.chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::tests::sample;
    use proptest::prelude::*;

    fn rp(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| Hash::of(&(i as u64).to_le_bytes()))
            .collect()
    }

    proptest! {
        /// Every leaf's audit path leads to the children hash, at its position only.
        #[test]
        fn audit_paths_lead_to_the_root(n in 1usize..70, pick in 0usize..70) {
            let l = leaves(n);
            let root = children_hash(&l);
            let m = pick % n;
            let path = audit_path(m, &l);
            prop_assert_eq!(root_from_path(&l[m], m as u64, n as u64, &path), Some(root));
            if n > 1 {
                let other = (m + 1) % n;
                prop_assert_ne!(root_from_path(&l[m], other as u64, n as u64, &path), Some(root));
                prop_assert_ne!(root_from_path(&l[other], m as u64, n as u64, &path), Some(root));
            }
            // The children hash alone does not commit to the count (a path of 17 leaves also
            // fits 18); that is why a dir digest covers the count.
        }

        /// A proof survives its encoding, and no bytes make the decoder panic.
        #[test]
        fn proofs_round_trip(levels in proptest::collection::vec((any::<u32>(), 0u64..100, 0usize..8), 0..6),
                             junk in proptest::collection::vec(any::<u8>(), 0..64)) {
            let proof = SubtreeProof {
                levels: levels.into_iter().map(|(mode, index, n)| ProofLevel {
                    mode, index, count: index + 1, siblings: leaves(n),
                }).collect(),
            };
            prop_assert_eq!(decode_proof(&encode_proof(&proof)).unwrap(), proof);
            let _ = decode_proof(&junk);
            let mut with_magic = encode_proof(&SubtreeProof::default())[..12].to_vec();
            with_magic.extend_from_slice(&junk);
            let _ = decode_proof(&with_magic);
        }
    }

    /// The digest of a subtree index with the master's proof is the whole tree's digest, for
    /// every directory; and any change to the subtree or the proof gives another digest.
    #[test]
    fn every_subtree_proves_the_whole_tree() {
        let idx = sample();
        let hashes = TreeHashes::compute(&idx);
        let whole = hashes.digest();
        verify(&idx, None, &SubtreeProof::default(), &whole).unwrap();
        for dir in ["a", "a/empty"] {
            let dir = rp(dir);
            let sub = idx.subtree(&dir).unwrap();
            let proof = hashes.proof(&idx, &dir).unwrap();
            assert_eq!(proof.levels.len(), dir.components().count());
            verify(&sub, Some(&dir), &proof, &whole).unwrap();
            // The subtree's own digest is the one the master computed for the directory.
            let mode = proof.levels[0].mode;
            let own = TreeHashes::compute(&sub);
            assert_eq!(
                Some(dir_digest(mode, own.top_count, &own.top_children)),
                hashes.dir(&dir)
            );
            // Another directory's proof, or a proof with another mode, does not fit.
            let mut bad = proof.clone();
            bad.levels[0].mode ^= 0o20;
            assert!(verify(&sub, Some(&dir), &bad, &whole).is_err());
            assert!(verify(&sub, Some(&rp("b")), &proof, &whole).is_err());
        }
        assert!(hashes.proof(&idx, &rp("b.txt")).is_none());
        assert!(hashes.proof(&idx, &rp("nope")).is_none());

        // A changed mtime, pack hash, or chunk offset in the subtree: refused.
        let dir = rp("a");
        let proof = hashes.proof(&idx, &dir).unwrap();
        let sub = idx.subtree(&dir).unwrap();
        let mut changed = sub.clone();
        if let EntryKind::File(f) = &mut changed.entries[1].kind {
            f.mtime_ns += 1;
        }
        assert!(matches!(
            verify(&changed, Some(&dir), &proof, &whole),
            Err(TreeError::Mismatch { .. })
        ));
        let mut changed = sub.clone();
        changed.packs[0].hash = Hash::of(b"another pack");
        assert!(verify(&changed, Some(&dir), &proof, &whole).is_err());
        let mut changed = sub.clone();
        changed.chunks[0].offset += 1;
        assert!(verify(&changed, Some(&dir), &proof, &whole).is_err());
        // The same tree with its chunk table in another order: the same digest.
        let mut shuffled = idx.clone();
        shuffled.chunks.swap(0, 2);
        for e in &mut shuffled.entries {
            if let EntryKind::File(f) = &mut e.kind {
                for c in &mut f.chunks {
                    *c = match *c {
                        0 => 2,
                        2 => 0,
                        x => x,
                    };
                }
            }
        }
        shuffled.validate().unwrap();
        assert_eq!(TreeHashes::compute(&shuffled).digest(), whole);
        // Another chunker: another digest.
        let mut other = idx.clone();
        other.chunker.max *= 2;
        assert_ne!(TreeHashes::compute(&other).digest(), whole);
    }

    /// Tree format 2 covers the info section, through every subtree proof too; format 1
    /// verifies an index without one only.
    #[test]
    fn the_tree_digest_covers_the_info_section() {
        let mut idx = sample();
        idx.info = crate::info::tests::sample_info();
        let hashes = TreeHashes::compute(&idx);
        let whole = hashes.digest();
        assert_ne!(whole, TreeHashes::compute(&sample()).digest());
        let dir = rp("a/empty");
        let sub = idx.subtree(&dir).unwrap();
        let proof = hashes.proof(&idx, &dir).unwrap();
        verify(&sub, Some(&dir), &proof, &whole).unwrap();
        // Any change to the info, in the whole index or in a subtree: refused.
        for edit in [
            (|i: &mut Index| i.info.name.push('!')) as fn(&mut Index),
            |i| i.info.sets[0].mods.push(RelPath::new("b.txt").unwrap()),
            |i| i.info.sets[0].server.as_mut().unwrap().port += 1,
            |i| i.info.sets[0].server = None,
            |i| i.info = Default::default(),
        ] {
            let mut changed = idx.clone();
            edit(&mut changed);
            assert!(matches!(
                verify(&changed, None, &SubtreeProof::default(), &whole),
                Err(TreeError::Mismatch { .. })
            ));
            let mut changed = sub.clone();
            edit(&mut changed);
            assert!(verify(&changed, Some(&dir), &proof, &whole).is_err());
        }
        // Format 1: the old digest, for an index without info only; unknown formats refused.
        let plain = sample();
        let v1 = TreeHashes::compute(&plain).digest_v1(&plain.chunker);
        verify_format(&plain, None, &SubtreeProof::default(), TREE_FORMAT_V1, &v1).unwrap();
        assert!(verify_format(&idx, None, &SubtreeProof::default(), TREE_FORMAT_V1, &v1).is_err());
        assert!(verify_format(&plain, None, &SubtreeProof::default(), 3, &v1).is_err());
    }

    #[test]
    fn hex_round_trips_and_refuses_junk() {
        let b: Vec<u8> = (0..=255).collect();
        assert_eq!(from_hex(&to_hex(&b), 256).unwrap(), b);
        assert!(from_hex(&to_hex(&b), 255).is_none());
        assert!(from_hex("abc", 10).is_none());
        assert!(from_hex("zz", 10).is_none());
        assert_eq!(from_hex("AB", 1).unwrap(), vec![0xab]);
    }

    #[test]
    fn a_proof_of_another_format_is_refused() {
        let mut b = encode_proof(&SubtreeProof::default());
        assert!(decode_proof(&b).is_ok());
        b[8] = 2;
        assert!(
            decode_proof(&b)
                .unwrap_err()
                .to_string()
                .contains("format 2")
        );
        let mut b = encode_proof(&SubtreeProof::default());
        b.push(0);
        assert!(decode_proof(&b).is_err());
    }
}
