//! Real encoded values to start each target from: the committed corpus is these, written by
//! `HUMMEL_BLESS=1 cargo test -p hummel-fuzz` (plus any input a deep run or a regression adds).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Serialize;

use hummel_client::state::{CachedStat, ClientState};
use hummel_core::codec::ChunkCompressor;
use hummel_core::delta::{IndexDelta, encode_delta};
use hummel_core::index::{self, ChunkLocation, DirEntry, Entry, EntryKind, FileEntry, PackInfo};
use hummel_core::pack::PackWriter;
use hummel_core::statement::{KeyPair, Rotation, Statement};
use hummel_core::tree::{TreeHashes, encode_proof};
use hummel_core::{ChunkerConfig, Codec, Hash, Index, RelPath};
use hummel_proto::api::{
    Assignment, ClientReport, HashlistChanges, HashlistVersion, Heartbeat, LocateRequest,
    LocateResponse, RevisionInfo, SlaveDirective, SlaveEndpoint, SlaveHashlist,
};

use crate::engine::Rng;

/// Builds small, valid indexes: every chunk is 100 raw bytes at a place given by its id.
#[derive(Default)]
struct Tree {
    entries: Vec<Entry>,
    chunks: Vec<ChunkLocation>,
    positions: BTreeMap<u32, u32>,
}

impl Tree {
    fn dir(mut self, path: &str) -> Tree {
        self.entries.push(Entry {
            path: RelPath::new(path).expect("valid path"),
            kind: EntryKind::Dir(DirEntry { mode: 0o755 }),
        });
        self
    }

    /// A file of one 100-byte chunk per id; chunk `id` lives in pack `1 + id / 1000`.
    fn file(mut self, path: &str, ids: &[u32]) -> Tree {
        let mut list = Vec::new();
        for &id in ids {
            let next = self.chunks.len() as u32;
            let pos = *self.positions.entry(id).or_insert(next);
            if pos == next {
                self.chunks.push(ChunkLocation {
                    hash: Hash::of(&id.to_le_bytes()),
                    pack: 1 + id / 1000,
                    offset: 16 + u64::from(id % 1000) * 100,
                    stored_len: 100,
                    len: 100,
                    codec: Codec::Raw,
                });
            }
            list.push(pos);
        }
        self.entries.push(Entry {
            path: RelPath::new(path).expect("valid path"),
            kind: EntryKind::File(FileEntry {
                size: 100 * ids.len() as u64,
                mode: 0o644,
                mtime_ns: 1_700_000_000_000_000_000 + i64::from(ids.len() as u32),
                hash: Hash::of(path.as_bytes()),
                chunks: list,
            }),
        });
        self
    }

    fn build(mut self, revision: u64) -> Index {
        self.entries.sort_by(|a, b| a.path.cmp(&b.path));
        let used: std::collections::BTreeSet<u32> = self.chunks.iter().map(|c| c.pack).collect();
        let index = Index {
            revision,
            created_unix: 1_700_000_000 + revision as i64,
            chunker: ChunkerConfig::default(),
            root: None,
            entries: self.entries,
            chunks: self.chunks,
            packs: used
                .into_iter()
                .map(|number| PackInfo {
                    number,
                    hash: Hash::of(&number.to_le_bytes()),
                    size: 1 << 20,
                })
                .collect(),
            info: Default::default(),
        };
        index.validate().expect("seed index is valid");
        index
    }
}

/// The index the delta targets apply their deltas to.
pub fn base_index() -> &'static Index {
    static BASE: OnceLock<Index> = OnceLock::new();
    BASE.get_or_init(|| {
        let big: Vec<u32> = (0..40).collect();
        Tree::default()
            .dir("@mod")
            .dir("@mod/addons")
            .file("@mod/addons/big.pbo", &big)
            .file("@mod/addons/small.pbo", &[1000])
            .file("@mod/mod.cpp", &[1001, 1002])
            .dir("@mod/empty")
            .file("readme.txt", &[2000])
            .file("zero.bin", &[])
            .build(100)
    })
}

/// Later revisions of [`base_index`]: a chunk replaced and one inserted in the big file
/// (a patch), files removed and added, a folder gone, a mode changed.
fn targets() -> Vec<Index> {
    let mut big: Vec<u32> = (0..40).collect();
    big[20] = 3000;
    big.insert(30, 3001);
    let first = Tree::default()
        .dir("@mod")
        .dir("@mod/addons")
        .file("@mod/addons/big.pbo", &big)
        .file("@mod/mod.cpp", &[1001, 1002])
        .dir("@mod/new")
        .file("@mod/new/x.pbo", &[3002, 3003, 3002])
        .file("readme.txt", &[2001])
        .file("zero.bin", &[])
        .build(101);
    let mut second = base_index().clone();
    second.revision = 102;
    if let EntryKind::Dir(d) = &mut second.entries[0].kind {
        d.mode = 0o700;
    }
    vec![first, second]
}

/// Seeds of `index` (encoded envelopes).
pub fn index() -> Vec<Vec<u8>> {
    index_values().iter().map(index::encode).collect()
}

/// Seeds of `index_body` (postcard bodies).
pub fn index_body() -> Vec<Vec<u8>> {
    index_values()
        .iter()
        .map(|i| postcard::to_stdvec(i).expect("serialises"))
        .collect()
}

fn index_values() -> Vec<Index> {
    let base = base_index().clone();
    let sub = base
        .subtree(&RelPath::new("@mod").expect("valid"))
        .expect("a directory");
    let mut empty = base.clone();
    empty.entries.clear();
    empty.chunks.clear();
    empty.packs.clear();
    // Index format 2's info section: a name, a description, a set with a server.
    let mut with_info = base.clone();
    with_info.info = hummel_core::RepoInfo {
        name: "Sunday group".into(),
        description: "Mods.\nJoin us.".into(),
        sets: vec![hummel_core::SetInfo {
            name: "ops".into(),
            description: "Sunday operations".into(),
            mods: vec![RelPath::new("@mod").expect("valid")],
            server: Some(hummel_core::ServerInfo {
                address: "play.example.org".into(),
                port: 2302,
                password: true,
            }),
        }],
    };
    let mut all = vec![base, sub, empty, with_info];
    all.extend(targets());
    all
}

fn delta_values() -> Vec<IndexDelta> {
    let base = base_index();
    let mut all: Vec<IndexDelta> = targets()
        .iter()
        .map(|t| IndexDelta::between(base, t).expect("same root and chunker"))
        .collect();
    assert!(
        all.iter().any(|d| !d.patches.is_empty()),
        "a seed delta has a patch"
    );
    // The delta from the base to itself: nothing changes.
    all.push(IndexDelta::between(base, base).expect("same root and chunker"));
    all
}

/// Seeds of `delta` (encoded envelopes).
pub fn delta() -> Vec<Vec<u8>> {
    delta_values().iter().map(encode_delta).collect()
}

/// Seeds of `delta_body` (postcard bodies).
pub fn delta_body() -> Vec<Vec<u8>> {
    delta_values()
        .iter()
        .map(|d| postcard::to_stdvec(d).expect("serialises"))
        .collect()
}

/// Seeds of `pack`: an empty pack and one with compressed and raw chunks.
pub fn pack() -> Vec<Vec<u8>> {
    let empty = PackWriter::new(Vec::new())
        .and_then(PackWriter::finish)
        .expect("in memory")
        .writer;
    let mut w = PackWriter::new(Vec::new()).expect("in memory");
    let mut comp = ChunkCompressor::new(3).expect("zstd level 3");
    for data in chunk_samples() {
        let (codec, stored) = comp.compress(&data);
        w.add(Hash::of(&data), codec, &stored, data.len() as u32)
            .expect("in memory");
    }
    vec![empty, w.finish().expect("in memory").writer]
}

/// Chunks that compress and one that does not.
fn chunk_samples() -> Vec<Vec<u8>> {
    let mut noise = vec![0u8; 300];
    Rng::new(1).fill(&mut noise);
    vec![b"hummel ".repeat(40), noise, vec![0u8; 1000], b"x".to_vec()]
}

/// Seeds of `chunk`: `flags | u32 len | stored bytes` (see [`crate::chunk`]).
pub fn chunk() -> Vec<Vec<u8>> {
    let mut comp = ChunkCompressor::new(3).expect("zstd level 3");
    chunk_samples()
        .iter()
        .map(|data| {
            let (codec, stored) = comp.compress(data);
            let mut input = vec![codec as u8 | 2];
            input.extend_from_slice(&(data.len() as u32).to_le_bytes());
            input.extend_from_slice(&stored);
            input
        })
        .collect()
}

/// Seeds of `chunker`: `flags | 3 × u32 | data` (see [`crate::chunker`]).
pub fn chunker() -> Vec<Vec<u8>> {
    let mut data = vec![0u8; 6000];
    Rng::new(2).fill(&mut data);
    let mut small = vec![0u8];
    for v in [64u32, 256, 1024] {
        small.extend_from_slice(&v.to_le_bytes());
    }
    small.extend_from_slice(&data);
    let mut default = vec![1u8];
    let c = ChunkerConfig::default();
    for v in [c.min, c.avg, c.max] {
        default.extend_from_slice(&v.to_le_bytes());
    }
    default.extend_from_slice(&data[..100]);
    vec![small, default]
}

fn state_value() -> ClientState {
    let mut files = BTreeMap::new();
    files.insert(
        "@mod/addons/big.pbo".to_string(),
        CachedStat {
            size: 4000,
            mtime_ns: 1_700_000_000_123_456_789,
            ctime_ns: -1,
            ino: 42,
            hash: Hash::of(b"big"),
        },
    );
    files.insert(
        "readme.txt".to_string(),
        CachedStat {
            size: 100,
            mtime_ns: 0,
            ctime_ns: 5,
            ino: u64::MAX,
            hash: Hash::of(b"readme"),
        },
    );
    ClientState {
        master_url: "http://127.0.0.1:7070".into(),
        subtree: Some("mods/x".into()),
        revision: 20_261_202_014_530,
        dirs: vec!["@mod".into(), "@mod/addons".into()],
        packs: vec![1, 4, 70_000],
        bytes: 4100,
        files: files.into_iter().collect(),
        repository_id: Some("00112233445566778899aabbccddeeff".into()),
        revision_hash: Some(Hash::of(b"index body")),
        owned: vec!["@mod".into(), "readme.txt".into()],
        tree_digest: Some(Hash::of(b"tree")),
        signing_key: Some(hummel_core::statement::KeyPair::from_secret(&[3; 32]).public()),
    }
}

/// The state format 1 layout (read, never written, by today's client).
#[derive(Serialize)]
struct StateV1<'a> {
    master_url: &'a str,
    subtree: Option<&'a str>,
    revision: u64,
    dirs: &'a [String],
    packs: &'a [u32],
    bytes: u64,
    files: &'a BTreeMap<String, CachedStat>,
}

/// The state format 2 layout: the stat cache as a map (read, never written, by today's client).
#[derive(Serialize)]
struct StateV2<'a> {
    master_url: &'a str,
    subtree: Option<&'a str>,
    revision: u64,
    dirs: &'a [String],
    packs: &'a [u32],
    bytes: u64,
    files: &'a BTreeMap<String, CachedStat>,
    repository_id: Option<&'a str>,
    revision_hash: Option<Hash>,
    owned: &'a [String],
}

/// Seeds of `client_state`: the format written today, and formats 2 and 1.
pub fn client_state() -> Vec<Vec<u8>> {
    let s = state_value();
    let files: BTreeMap<String, CachedStat> =
        s.files.iter().map(|(p, c)| (p.to_string(), *c)).collect();
    let mut v1 = b"HUMLSTAT".to_vec();
    v1.extend_from_slice(&1u32.to_le_bytes());
    v1.extend(
        postcard::to_stdvec(&StateV1 {
            master_url: &s.master_url,
            subtree: None,
            revision: s.revision,
            dirs: &s.dirs,
            packs: &s.packs,
            bytes: s.bytes,
            files: &files,
        })
        .expect("serialises"),
    );
    let mut v2 = b"HUMLSTAT".to_vec();
    v2.extend_from_slice(&2u32.to_le_bytes());
    v2.extend(
        postcard::to_stdvec(&StateV2 {
            master_url: &s.master_url,
            subtree: s.subtree.as_deref(),
            revision: s.revision,
            dirs: &s.dirs,
            packs: &s.packs,
            bytes: s.bytes,
            files: &files,
            repository_id: s.repository_id.as_deref(),
            revision_hash: s.revision_hash,
            owned: &s.owned,
        })
        .expect("serialises"),
    );
    vec![s.encode(), v2, v1]
}

/// Seeds of `range`: `u64 size | header value`.
pub fn range() -> Vec<Vec<u8>> {
    [
        (100u64, "bytes=0-9"),
        (100, "bytes=90-"),
        (100, "bytes=-10"),
        (16 << 20, "bytes=16-1048591"),
        (0, "bytes=0-0"),
        (100, "bytes=0-1,5-6"),
    ]
    .iter()
    .map(|(size, v)| {
        let mut input = size.to_le_bytes().to_vec();
        input.extend_from_slice(v.as_bytes());
        input
    })
    .collect()
}

/// Seeds of `relpath`.
pub fn relpath() -> Vec<Vec<u8>> {
    [
        "a",
        "@mod_1/addons/x y.pbo",
        "ünïcødé/日本語.txt",
        ".hidden/a..b/...",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

/// Seeds of `hash_text`.
pub fn hash_text() -> Vec<Vec<u8>> {
    vec![Hash::of(b"hummel").to_hex().into_bytes()]
}

/// Seeds of `wire_json`: `selector byte | JSON` (see [`crate::wire_json`]).
pub fn wire_json() -> Vec<Vec<u8>> {
    let h = |n: u8| Hash::of(&[n]);
    let changes = HashlistChanges {
        epoch: 9,
        base: 4,
        seq: 6,
        added: vec![h(1), h(2)],
        removed: vec![h(3)],
    };
    let bodies: Vec<(u8, Vec<u8>)> = vec![
        (
            0,
            json(&SlaveHashlist {
                slave_id: "s1".into(),
                url: "http://127.0.0.1:7071".into(),
                quota: Some(1 << 40),
                used: 123,
                packs: vec![h(1), h(2)],
                read_token_digest: None,
            }),
        ),
        (
            1,
            json(&Heartbeat {
                slave_id: "s1".into(),
                used: 1,
                packs: 2,
                replicating: 0,
                corrupt: vec![h(9)],
                hashlist: Some(changes.clone()),
                bytes_served: None,
            }),
        ),
        (
            2,
            json(&SlaveDirective {
                slave_id: "s1".into(),
                assign: vec![Assignment {
                    pack: h(4),
                    size: 16 << 20,
                    sources: vec!["http://127.0.0.1:7072".into()],
                }],
                drop: vec![h(5)],
                heartbeat_interval_ms: 3000,
                hashlist: Some(HashlistVersion { epoch: 9, seq: 6 }),
            }),
        ),
        (3, json(&changes)),
        (
            4,
            json(&LocateRequest {
                packs: vec![1, 2, 3],
            }),
        ),
        (
            5,
            json(&LocateResponse {
                slaves: vec![SlaveEndpoint {
                    id: "s1".into(),
                    url: "http://127.0.0.1:7071".into(),
                }],
                holders: vec![vec![0], vec![]],
                fallback: Some(0),
                target: Some(2),
            }),
        ),
        (
            6,
            json(&ClientReport {
                client_id: "c".into(),
                client_key: None,
                revision: 3,
                path: "".into(),
                files: 1,
                bytes: 2,
                packs: vec![1],
                bad_slaves: vec![],
                pinned: None,
            }),
        ),
        (
            7,
            json(&RevisionInfo {
                revision: Some(20_261_202_014_530),
                created_unix: Some(1_796_175_930),
                files: 10,
                bytes: 1000,
                index_hash: Some(h(7)),
                repository_id: Some("00112233445566778899aabbccddeeff".into()),
                mass_delete_confirmed: true,
                statement: Some("00ff".into()),
                key_rotations: vec!["0011".into()],
            }),
        ),
    ];
    bodies
        .into_iter()
        .map(|(sel, body)| {
            let mut input = vec![sel];
            input.extend(body);
            input
        })
        .collect()
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("serialises")
}

/// Seeds of `statement`: a signed statement and a rotation as sent (flag 0), and their bodies
/// for the fuzz key to seal (flags 1 and 2).
pub fn statement() -> Vec<Vec<u8>> {
    let key = crate::fuzz_key();
    let other = KeyPair::from_secret(&[7; 32]);
    let statement = Statement {
        repository_id: "00112233445566778899aabbccddeeff".into(),
        revision: 20_261_202_014_530,
        tree_format: hummel_core::tree::TREE_FORMAT,
        tree_digest: Hash::of(b"tree"),
        created_unix: 1_796_175_930,
        signed_unix: 1_796_175_931,
        expires_unix: 1_798_767_931,
        mass_delete_confirmed: true,
        key: key.public(),
    };
    let rotation = Rotation {
        repository_id: statement.repository_id.clone(),
        old_key: key.public(),
        new_key: other.public(),
        rotated_unix: 1_796_175_000,
    };
    let body = |b: &[u8]| b[12..b.len() - 64].to_vec();
    let signed = statement.sign(&key);
    let rotated = rotation.sign(&key);
    let with = |flag: u8, b: Vec<u8>| [vec![flag], b].concat();
    vec![
        with(0, signed.clone()),
        with(0, rotated.clone()),
        with(1, body(&signed)),
        with(2, body(&rotated)),
    ]
}

/// Seeds of `proof`: the base index's proofs of its directories, whole and after the header.
pub fn proof() -> Vec<Vec<u8>> {
    let base = base_index();
    let hashes = TreeHashes::compute(base);
    let mut out = Vec::new();
    for dir in ["@mod", "@mod/addons", "@mod/empty"] {
        let p = hashes
            .proof(base, &RelPath::new(dir).expect("valid"))
            .expect("a directory of the base");
        let bytes = encode_proof(&p);
        out.push([vec![0], bytes.clone()].concat());
        out.push([vec![1], bytes[12..].to_vec()].concat());
    }
    out
}

/// The profiles file: the golden fixture, a minimal file, and links as text.
pub fn profiles() -> Vec<Vec<u8>> {
    vec![
        include_bytes!("../../hummel-player/tests/fixtures/profiles-v1.json").to_vec(),
        br#"{"format":1,"profiles":[{"name":"a","repository":"http://x"}]}"#.to_vec(),
        b"hummel://mods.example:7070/join".to_vec(),
    ]
}

/// Seeds of `slave_proof`: the identity headers of a real signed heartbeat, one a line.
pub fn slave_proof() -> Vec<Vec<u8>> {
    let key = hummel_proto::identity::SlaveKey::from_secret([7; 32]);
    let headers = key.sign_request(
        "POST",
        "/slave/heartbeat",
        "0123abcd",
        1_700_000_000_000,
        b"{}",
    );
    let lines: Vec<&str> = headers.iter().map(|(_, v)| v.as_str()).collect();
    vec![lines.join("\n").into_bytes(), key.to_hex().into_bytes()]
}
