//! Golden fixtures: the exact bytes of every format hummel-core writes, and the exact cut
//! points of the chunker, for fixed values and seeded inputs. A dependency upgrade (postcard,
//! zstd, FastCDC, BLAKE3) or an edit that changes any of them fails here instead of silently
//! changing what masters write and clients read.
//!
//! Each test first decodes the committed file (old bytes stay readable), then checks that
//! encoding the value gives exactly those bytes. After a deliberate change (a new format
//! version, new chunker parameters), regenerate with
//! `HUMMEL_BLESS=1 cargo test -p hummel-core --test golden` and commit the files with it.

use std::io::Cursor;
use std::path::PathBuf;

use hummel_core::codec::{ChunkCompressor, decode_chunk};
use hummel_core::delta::{ChunkRun, FilePatch, IndexDelta, decode_delta, encode_delta};
use hummel_core::index::{self, ChunkLocation, DirEntry, Entry, EntryKind, FileEntry, PackInfo};
use hummel_core::pack::{PackEntry, PackWriter, read_toc};
use hummel_core::statement::{KeyPair, Rotation, Statement};
use hummel_core::tree::{self, TreeHashes, decode_proof, encode_proof};
use hummel_core::{
    ChunkerConfig, Codec, Hash, Index, RelPath, RepoInfo, ServerInfo, SetInfo, chunk_stream,
};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn blessing() -> bool {
    std::env::var_os("HUMMEL_BLESS").is_some_and(|v| v == "1")
}

/// The committed bytes of `name`; with `HUMMEL_BLESS=1`, `actual` is written there first.
fn golden(name: &str, actual: &[u8]) -> Vec<u8> {
    let path = fixture(name);
    if blessing() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
    }
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; create it with HUMMEL_BLESS=1 cargo test -p hummel-core --test golden",
            path.display()
        )
    })
}

/// Fails unless `actual` is exactly the committed `expected` bytes of `name`.
fn same_bytes(name: &str, expected: &[u8], actual: &[u8]) {
    if expected != actual {
        let at = expected
            .iter()
            .zip(actual)
            .position(|(a, b)| a != b)
            .unwrap_or(expected.len().min(actual.len()));
        panic!(
            "tests/fixtures/{name} changed: {} bytes committed, {} now, first difference at \
             byte {at}. Something changed the format (a dependency upgrade, an edit). If that \
             is deliberate (a new format version as docs/FORMATS.md says, new chunker \
             parameters), regenerate with HUMMEL_BLESS=1 cargo test -p hummel-core --test \
             golden and commit the files.",
            expected.len(),
            actual.len()
        );
    }
}

fn rp(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

/// The index the fixtures hold: a subtree, folders (one empty), files of several chunks, of
/// one, of none, both codecs, two packs.
fn golden_index() -> Index {
    let file = |size, mode, mtime_ns, name: &[u8], chunks| {
        EntryKind::File(FileEntry {
            size,
            mode,
            mtime_ns,
            hash: Hash::of(name),
            chunks,
        })
    };
    let dir = |mode| EntryKind::Dir(DirEntry { mode });
    let entry = |path: &str, kind| Entry {
        path: rp(path),
        kind,
    };
    let idx = Index {
        revision: 20_261_202_014_530,
        created_unix: 1_796_175_930,
        chunker: ChunkerConfig::default(),
        root: Some(rp("mods")),
        entries: vec![
            entry("@a", dir(0o755)),
            entry("@a/empty", dir(0o700)),
            entry(
                "@a/x.pbo",
                file(300, 0o644, 1_796_175_000_123_456_789, b"x", vec![0, 1]),
            ),
            entry("b.txt", file(200, 0o600, -1, b"b", vec![2])),
            entry("zero", file(0, 0o644, 0, b"", vec![])),
        ],
        chunks: vec![
            ChunkLocation {
                hash: Hash::of(b"c0"),
                pack: 1,
                offset: 16,
                stored_len: 50,
                len: 100,
                codec: Codec::Zstd,
            },
            ChunkLocation {
                hash: Hash::of(b"c1"),
                pack: 1,
                offset: 66,
                stored_len: 200,
                len: 200,
                codec: Codec::Raw,
            },
            ChunkLocation {
                hash: Hash::of(b"c2"),
                pack: 7,
                offset: 16,
                stored_len: 200,
                len: 200,
                codec: Codec::Raw,
            },
        ],
        packs: vec![
            PackInfo {
                number: 1,
                hash: Hash::of(b"p1"),
                size: 300,
            },
            PackInfo {
                number: 7,
                hash: Hash::of(b"p7"),
                size: 1 << 20,
            },
        ],
        info: RepoInfo::default(),
    };
    idx.validate().unwrap();
    idx
}

/// [`golden_index`] with an info section (index format 2): a name, a description with a line
/// break, a set with a server and one without.
fn golden_index_v2() -> Index {
    let mut idx = golden_index();
    idx.info = RepoInfo {
        name: "Sunday group".into(),
        description: "Our mods.\nJoin us on Sundays.".into(),
        sets: vec![
            SetInfo {
                name: "ops".into(),
                description: "Sunday operations".into(),
                mods: vec![rp("@a"), rp("@cba")],
                server: Some(ServerInfo {
                    address: "play.example.org".into(),
                    port: 2302,
                    password: true,
                }),
            },
            SetInfo {
                name: "training".into(),
                description: String::new(),
                mods: vec![rp("@a")],
                server: None,
            },
        ],
    };
    idx.validate().unwrap();
    idx
}

/// Format 1 is no longer written, but a client or master still reads it: as an index whose
/// info section is empty.
#[test]
fn index_format_1_still_reads() {
    let idx = golden_index();
    let encoded = std::fs::read(fixture("index-v1.idx")).unwrap();
    assert_eq!(&encoded[8..12], &1u32.to_le_bytes());
    let (decoded, id) = index::decode(&encoded).unwrap();
    assert_eq!(decoded, idx);
    assert_eq!(id, Hash::of(&encoded[24..encoded.len() - 4]));
    let (from, _) = index::decode_from(Cursor::new(encoded)).unwrap();
    assert_eq!(from, idx);
}

#[test]
fn index_format_2() {
    let idx = golden_index_v2();
    let plain = golden("index-v2.postcard", &postcard::to_stdvec(&idx).unwrap());
    assert_eq!(postcard::from_bytes::<Index>(&plain).unwrap(), idx);
    let encoded = golden("index-v2.idx", &index::encode(&idx));
    let (decoded, id) = index::decode(&encoded).unwrap();
    assert_eq!(decoded, idx);
    assert_eq!(id, Hash::of(&encoded[24..encoded.len() - 4]));
    same_bytes(
        "index-v2.postcard",
        &plain,
        &postcard::to_stdvec(&idx).unwrap(),
    );
    // The postcard body is the format; the envelope adds zstd's bytes, which a zstd upgrade
    // may change without changing what decodes (then only this file needs blessing).
    same_bytes("index-v2.idx", &encoded, &index::encode(&idx));
}

/// The digest a delta carries and the client recomputes: both sides must agree forever.
#[test]
fn entries_digest_v1() {
    let digest = hummel_core::delta::entries_digest(&golden_index());
    let text = golden("entries-digest-v1.txt", format!("{digest}\n").as_bytes());
    same_bytes(
        "entries-digest-v1.txt",
        &text,
        format!("{digest}\n").as_bytes(),
    );
}

/// The tree digest (format 1) that statements sign, and the proof of a subtree (format 1):
/// master and client compute them independently, so both must agree forever.
#[test]
fn tree_digest_and_proof_v1() {
    let idx = golden_index();
    let hashes = TreeHashes::compute(&idx);
    let digest = hashes.digest_v1(&idx.chunker);
    let text = format!("{digest}\n");
    same_bytes(
        "tree-digest-v1.txt",
        &golden("tree-digest-v1.txt", text.as_bytes()),
        text.as_bytes(),
    );
    let dir = rp("@a/empty");
    let proof = hashes.proof(&idx, &dir).unwrap();
    let encoded = golden("proof-v1.bin", &encode_proof(&proof));
    assert_eq!(decode_proof(&encoded).unwrap(), proof);
    same_bytes("proof-v1.bin", &encoded, &encode_proof(&proof));
    let sub = idx.subtree(&dir).unwrap();
    tree::verify_format(&sub, Some(&dir), &proof, tree::TREE_FORMAT_V1, &digest).unwrap();
}

/// The tree digest (format 2) over an index with an info section, and a subtree's proof to
/// it (the proof format is unchanged: the info travels with the subtree).
#[test]
fn tree_digest_v2() {
    let idx = golden_index_v2();
    let hashes = TreeHashes::compute(&idx);
    let digest = hashes.digest();
    let text = format!("{digest}\n");
    same_bytes(
        "tree-digest-v2.txt",
        &golden("tree-digest-v2.txt", text.as_bytes()),
        text.as_bytes(),
    );
    let info = format!("{}\n", idx.info.digest());
    same_bytes(
        "info-digest-v1.txt",
        &golden("info-digest-v1.txt", info.as_bytes()),
        info.as_bytes(),
    );
    let dir = rp("@a/empty");
    let proof = hashes.proof(&idx, &dir).unwrap();
    let sub = idx.subtree(&dir).unwrap();
    tree::verify(&sub, Some(&dir), &proof, &digest).unwrap();
    assert_eq!(
        proof,
        TreeHashes::compute(&golden_index())
            .proof(&golden_index(), &dir)
            .unwrap()
    );
}

/// A signed statement and a key rotation (format 1). Ed25519 signatures are deterministic, so
/// the fixed keys give fixed bytes.
#[test]
fn statement_and_rotation_v1() {
    let (old, key) = (
        KeyPair::from_secret(&[1; 32]),
        KeyPair::from_secret(&[2; 32]),
    );
    let statement = Statement {
        repository_id: "00112233445566778899aabbccddeeff".into(),
        revision: 20_261_202_014_530,
        tree_format: tree::TREE_FORMAT_V1,
        tree_digest: TreeHashes::compute(&golden_index()).digest_v1(&ChunkerConfig::default()),
        created_unix: 1_796_175_930,
        signed_unix: 1_796_175_931,
        expires_unix: 1_798_767_931,
        mass_delete_confirmed: true,
        key: key.public(),
    };
    let bytes = golden("statement-v1.bin", &statement.sign(&key));
    assert_eq!(Statement::decode(&bytes).unwrap(), statement);
    same_bytes("statement-v1.bin", &bytes, &statement.sign(&key));
    let rotation = Rotation {
        repository_id: statement.repository_id.clone(),
        old_key: old.public(),
        new_key: key.public(),
        rotated_unix: 1_796_175_000,
    };
    let bytes = golden("rotation-v1.bin", &rotation.sign(&old));
    assert_eq!(Rotation::decode(&bytes).unwrap(), rotation);
    same_bytes("rotation-v1.bin", &bytes, &rotation.sign(&old));
}

/// The revision after [`golden_index`] that [`golden_delta`] leads to.
fn golden_target() -> Index {
    let mut t = golden_index();
    t.revision += 1;
    t.created_unix += 60;
    t.chunks.push(ChunkLocation {
        hash: Hash::of(b"c3"),
        pack: 7,
        offset: 216,
        stored_len: 100,
        len: 100,
        codec: Codec::Raw,
    });
    // x.pbo gains a chunk at its end; zero is gone; a new folder.
    if let EntryKind::File(f) = &mut t.entries[2].kind {
        f.size = 400;
        f.mtime_ns += 1;
        f.hash = Hash::of(b"x2");
        f.chunks = vec![0, 1, 3];
    }
    t.entries.remove(4);
    t.entries.push(Entry {
        path: rp("new"),
        kind: EntryKind::Dir(DirEntry { mode: 0o755 }),
    });
    t.validate().unwrap();
    t
}

/// A delta written out by hand (not by `IndexDelta::between`, whose choices may change): a
/// patched file with both kinds of run, a removed file, an added folder.
fn golden_delta() -> IndexDelta {
    let target = golden_target();
    let EntryKind::File(x) = &target.entries[2].kind else {
        unreachable!()
    };
    IndexDelta {
        base_revision: golden_index().revision,
        revision: target.revision,
        created_unix: target.created_unix,
        chunker: target.chunker,
        root: target.root.clone(),
        removed: vec![rp("zero")],
        upserted: vec![
            Entry {
                path: rp("@a/x.pbo"),
                kind: EntryKind::File(FileEntry {
                    chunks: vec![],
                    ..x.clone()
                }),
            },
            Entry {
                path: rp("new"),
                kind: EntryKind::Dir(DirEntry { mode: 0o755 }),
            },
        ],
        patches: vec![FilePatch {
            entry: 0,
            runs: vec![
                ChunkRun::Old { from: 0, count: 2 },
                ChunkRun::New { from: 0, count: 1 },
            ],
        }],
        chunks: vec![target.chunks[3]],
        packs: vec![target.packs[1]],
        entries_digest: hummel_core::delta::entries_digest(&target),
    }
}

#[test]
fn index_delta_format_1() {
    let d = golden_delta();
    let plain = golden("delta-v1.postcard", &postcard::to_stdvec(&d).unwrap());
    assert_eq!(postcard::from_bytes::<IndexDelta>(&plain).unwrap(), d);
    let encoded = golden("delta-v1.idxd", &encode_delta(&d));
    let decoded = decode_delta(&encoded).unwrap();
    assert_eq!(decoded, d);
    // And it still rebuilds the revision it describes.
    let rebuilt = decoded.apply(&golden_index()).unwrap();
    assert_eq!(
        hummel_core::delta::entries_digest(&rebuilt),
        hummel_core::delta::entries_digest(&golden_target())
    );
    same_bytes(
        "delta-v1.postcard",
        &plain,
        &postcard::to_stdvec(&d).unwrap(),
    );
    same_bytes("delta-v1.idxd", &encoded, &encode_delta(&d));
}

/// The chunks of the golden pack: one that zstd shrinks, one it does not (raw), and a tiny one.
fn pack_chunks() -> Vec<Vec<u8>> {
    vec![
        b"hummel ".repeat(64),
        SplitMix64(7).bytes(300),
        b"x".to_vec(),
    ]
}

fn golden_pack() -> (Vec<u8>, Vec<PackEntry>) {
    let mut w = PackWriter::new(Vec::new()).unwrap();
    let mut comp = ChunkCompressor::new(3).unwrap();
    for c in pack_chunks() {
        let (codec, stored) = comp.compress(&c);
        w.add(Hash::of(&c), codec, &stored, c.len() as u32).unwrap();
    }
    let done = w.finish().unwrap();
    (done.writer, done.entries)
}

#[test]
fn pack_format_1() {
    let (bytes, entries) = golden_pack();
    let committed = golden("pack-v1.pack", &bytes);
    let toc = read_toc(Cursor::new(&committed), committed.len() as u64).unwrap();
    assert_eq!(toc, entries);
    assert_eq!(
        toc.iter().map(|e| e.codec).collect::<Vec<_>>(),
        [Codec::Zstd, Codec::Raw, Codec::Raw]
    );
    for (e, plain) in toc.iter().zip(pack_chunks()) {
        let stored = &committed[e.offset as usize..(e.offset + u64::from(e.stored_len)) as usize];
        assert_eq!(
            decode_chunk(e.codec, stored, e.len, &e.hash).unwrap(),
            plain
        );
    }
    same_bytes("pack-v1.pack", &committed, &bytes);
}

/// A pseudo-random stream that no dependency decides (rand's generators may change).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n.div_ceil(8))
            .flat_map(|_| self.next().to_le_bytes())
            .take(n)
            .collect()
    }
}

/// `offset length BLAKE3` per chunk, one line each.
fn boundaries(config: &ChunkerConfig, data: &[u8]) -> String {
    let mut out = String::new();
    let digest = chunk_stream::<_, std::io::Error, _>(config, data, |c| {
        out.push_str(&format!("{} {} {}\n", c.offset, c.data.len(), c.hash));
        Ok(())
    })
    .unwrap();
    assert_eq!(digest.hash, Hash::of(data));
    out
}

fn chunker_case(name: &str, config: ChunkerConfig, seed: u64, len: usize) {
    let data = SplitMix64(seed).bytes(len);
    // Some structure too: a run of zeros and a repeated block, where cut points behave
    // differently from noise.
    let mut data = data;
    data[len / 3..len / 3 + 100_000].fill(0);
    let block = data[..50_000].to_vec();
    data[len / 2..len / 2 + 50_000].copy_from_slice(&block);
    let actual = boundaries(&config, &data);
    let committed = golden(name, actual.as_bytes());
    same_bytes(name, &committed, actual.as_bytes());
}

/// The default parameters (16/64/256 KiB) on 3 MiB.
#[test]
fn chunker_boundaries_default() {
    chunker_case(
        "chunker-default.txt",
        ChunkerConfig::default(),
        0x4855_4d4d_454c,
        3 << 20,
    );
}

/// Small parameters (2/8/32 KiB): many cut points on 1 MiB.
#[test]
fn chunker_boundaries_small() {
    chunker_case(
        "chunker-small.txt",
        ChunkerConfig {
            min: 2048,
            avg: 8192,
            max: 32768,
        },
        42,
        1 << 20,
    );
}
