//! Fuzz targets for every Hummel decoder of untrusted bytes, and the engine that runs them on
//! stable Rust inside `cargo test`.
//!
//! # Layout
//! - The targets (below, one function each, listed in [`TARGETS`]): they take arbitrary bytes,
//!   must never panic, and check what must hold for whatever the decoder accepts: it
//!   validates, and encoding it again decodes to the same value (`decode(encode(x)) == x`).
//!   An assertion failing is a finding, like a panic.
//! - [`engine`]: a deterministic mutational fuzzer (no dependency decides its inputs).
//! - [`seeds`]: real encoded values to start from; the committed corpus (`corpus/<target>/`) is
//!   these plus whatever a deep run or a regression added.
//! - [`allowance`]: how many bytes a target may allocate for an input. `tests/fuzz.rs` runs
//!   every target under a counting allocator with that limit, so a decoder that trusts a
//!   length prefix, or builds far more than its input describes, aborts the test.
//!
//! `cargo test -p hummel-fuzz` replays the corpus and runs a short mutational round per target
//! (`HUMMEL_FUZZ_ITERS`, `HUMMEL_FUZZ_SEED`). The cargo-fuzz crate in `fuzz/` (outside the
//! workspace) runs the same functions under libFuzzer for deep, coverage-guided sessions; see
//! RELIABILITY.md.

pub mod engine;
pub mod seeds;

use std::io::{Cursor, Read};

use serde::Serialize;
use serde::de::DeserializeOwned;

use hummel_client::state::ClientState;
use hummel_core::chunk::MAX_CHUNK_SIZE;
use hummel_core::codec::{ChunkCompressor, decode_chunk};
use hummel_core::delta::{DELTA_MAGIC, IndexDelta, decode_delta, encode_delta, entries_digest};
use hummel_core::index::{self, INDEX_FORMAT_VERSION, INDEX_MAGIC, MAX_INDEX_PLAIN};
use hummel_core::pack::{PackWriter, read_toc};
use hummel_core::relpath::{MAX_COMPONENT_LEN, MAX_PATH_LEN};
use hummel_core::statement::{
    KeyPair, ROTATION_MAGIC, Rotation, STATEMENT_MAGIC, Statement, rotation_path,
};
use hummel_core::tree::{self, PROOF_MAGIC, TreeHashes, decode_proof, encode_proof};
use hummel_core::{ChunkerConfig, Codec, EntryKind, Hash, Index, RelPath, chunk_stream};
use hummel_proto::api::{
    ClientReport, HashlistChanges, Heartbeat, LocateRequest, LocateResponse, RevisionInfo,
    SlaveDirective, SlaveHashlist,
};
use hummel_store::http::{RangeSpec, parse_range};

/// One fuzz target.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    /// Its name: the test, the corpus folder and the cargo-fuzz target are called this.
    pub name: &'static str,
    /// Runs one input; true if the decoder accepted it (the engine then mutates it further).
    pub run: fn(&[u8]) -> bool,
    /// Real encoded values to start from.
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// Longest input the engine makes.
    pub max_len: usize,
    /// Mutated inputs per `cargo test` run (one to three seconds in a debug build).
    pub iterations: u64,
}

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "index",
        run: index,
        seeds: seeds::index,
        max_len: 8 << 10,
        iterations: 10_000,
    },
    Target {
        name: "index_body",
        run: index_body,
        seeds: seeds::index_body,
        max_len: 8 << 10,
        iterations: 15_000,
    },
    Target {
        name: "delta",
        run: delta,
        seeds: seeds::delta,
        max_len: 8 << 10,
        iterations: 10_000,
    },
    Target {
        name: "delta_body",
        run: delta_body,
        seeds: seeds::delta_body,
        max_len: 8 << 10,
        iterations: 15_000,
    },
    Target {
        name: "pack",
        run: pack,
        seeds: seeds::pack,
        max_len: 8 << 10,
        iterations: 15_000,
    },
    Target {
        name: "chunk",
        run: chunk,
        seeds: seeds::chunk,
        max_len: 4 << 10,
        iterations: 10_000,
    },
    Target {
        name: "chunker",
        run: chunker,
        seeds: seeds::chunker,
        max_len: 16 << 10,
        iterations: 4_000,
    },
    Target {
        name: "client_state",
        run: client_state,
        seeds: seeds::client_state,
        max_len: 4 << 10,
        iterations: 25_000,
    },
    Target {
        name: "range",
        run: range,
        seeds: seeds::range,
        max_len: 256,
        iterations: 50_000,
    },
    Target {
        name: "relpath",
        run: relpath,
        seeds: seeds::relpath,
        max_len: 5 << 10,
        iterations: 40_000,
    },
    Target {
        name: "hash_text",
        run: hash_text,
        seeds: seeds::hash_text,
        max_len: 256,
        iterations: 25_000,
    },
    Target {
        name: "wire_json",
        run: wire_json,
        seeds: seeds::wire_json,
        max_len: 4 << 10,
        iterations: 25_000,
    },
    Target {
        name: "statement",
        run: statement,
        seeds: seeds::statement,
        max_len: 1200,
        iterations: 25_000,
    },
    Target {
        name: "proof",
        run: proof,
        seeds: seeds::proof,
        max_len: 4 << 10,
        iterations: 25_000,
    },
    Target {
        name: "profiles",
        run: profiles,
        seeds: seeds::profiles,
        max_len: 4 << 10,
        iterations: 15_000,
    },
    Target {
        name: "slave_proof",
        run: slave_proof,
        seeds: seeds::slave_proof,
        max_len: 1 << 10,
        iterations: 15_000,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// Fixed allocation a target may make for any input (buffers of the streaming decoder, zstd
/// contexts, the base index of the delta targets).
pub const ALLOWANCE_BASE: usize = 4 << 20;
/// Bytes a target may allocate per byte it decodes. Decoded structures are larger than their
/// postcard bytes (a 4-byte directory entry is a ~100-byte `Entry`) and vectors double as they
/// grow, but a decoder that allocates from a length prefix, or expands a small input into a
/// large structure, goes far beyond this.
pub const ALLOWANCE_PER_BYTE: usize = 256;

/// How many bytes target `name` may allocate while it runs `data`: [`ALLOWANCE_BASE`] plus
/// [`ALLOWANCE_PER_BYTE`] per byte decoded (the decompressed body for an envelope), plus what
/// a target declares by design (a chunk's declared length, the chunker's buffer).
pub fn allowance(name: &str, data: &[u8]) -> usize {
    let decoded = match name {
        "index" | "delta" => data.len().max(envelope_plain_len(data)),
        _ => data.len(),
    };
    let by_design = match name {
        // Every chunk of a pack may declare up to MAX_CHUNK_SIZE: decoded, checked, rewritten.
        "pack" => 4 * MAX_CHUNK_SIZE as usize,
        "chunk" => data
            .get(1..5)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
            .map_or(0, |len| 4 * len.min(MAX_CHUNK_SIZE) as usize),
        "chunker" => chunker_config(data).map_or(0, |c| 4 * c.max as usize),
        _ => 0,
    };
    ALLOWANCE_BASE + ALLOWANCE_PER_BYTE * decoded + by_design
}

/// How many bytes the body of an index or delta envelope decompresses to (0 if it is not
/// one), counted without keeping them, at most [`MAX_INDEX_PLAIN`] + 1.
fn envelope_plain_len(data: &[u8]) -> usize {
    let Some(len) = data.get(16..24) else {
        return 0;
    };
    let len = u64::from_le_bytes(len.try_into().expect("8 bytes"));
    let Some(body) = usize::try_from(len)
        .ok()
        .and_then(|len| data.get(24..24usize.checked_add(len)?))
    else {
        return 0;
    };
    let Ok(decoder) = zstd::stream::read::Decoder::new(body) else {
        return 0;
    };
    let mut counted = 0u64;
    let mut limited = decoder.take(MAX_INDEX_PLAIN + 1);
    let mut buf = [0u8; 8192];
    while let Ok(n) = limited.read(&mut buf) {
        if n == 0 {
            break;
        }
        counted += n as u64;
    }
    counted as usize
}

/// An index or delta envelope (format `version`, no signature) around `plain`, as the master
/// writes one (at zstd level 1 here, which is faster and decodes the same).
pub fn seal_envelope(magic: &[u8; 8], version: u32, plain: &[u8]) -> Vec<u8> {
    let body = zstd::bulk::compress(plain, 1).expect("zstd compresses in memory");
    let mut out = Vec::with_capacity(body.len() + 28);
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&0u32.to_le_bytes());
    out
}

/// What must hold for every index a decoder hands out.
fn check_index(idx: &Index) {
    idx.validate().expect("a decoded index validates");
    let digest = entries_digest(idx);
    // Every subtree of it is an index too (the master cuts them for `?path=`).
    for e in idx.entries.iter().take(4) {
        if let EntryKind::Dir(_) = e.kind {
            let sub = idx.subtree(&e.path).expect("a listed directory");
            sub.validate()
                .expect("a subtree of a valid index validates");
        }
    }
    // A delta from the index to itself rebuilds it.
    let same = IndexDelta::between(idx, idx).expect("same root and chunker");
    let rebuilt = same.apply(idx).expect("an empty delta applies");
    assert_eq!(entries_digest(&rebuilt), digest);
}

/// `hummel_core::index::decode` on an encoded index (client: `GET /api/v1/index`, the held
/// `.hummel/index`; master: `revisions/N.idx`).
pub fn index(data: &[u8]) -> bool {
    let Ok((idx, id)) = index::decode(data) else {
        return false;
    };
    check_index(&idx);
    let len = u64::from_le_bytes(data[16..24].try_into().expect("8 bytes")) as usize;
    assert_eq!(
        id,
        Hash::of(&data[24..24 + len]),
        "the id is the body's hash"
    );
    let again = index::encode(&idx);
    let (back, _) = index::decode(&again).expect("a re-encoded index decodes");
    assert_eq!(back, idx, "decode(encode(x)) == x");
    true
}

/// [`index`] on a valid envelope around `data`: mutations reach postcard and validation
/// instead of stopping at zstd.
pub fn index_body(data: &[u8]) -> bool {
    index(&seal_envelope(INDEX_MAGIC, INDEX_FORMAT_VERSION, data))
}

/// `hummel_core::delta::decode_delta` and `IndexDelta::apply` on the seeds' base index (the
/// client's `?since=` path).
pub fn delta(data: &[u8]) -> bool {
    let Ok(d) = decode_delta(data) else {
        return false;
    };
    let again = decode_delta(&encode_delta(&d)).expect("a re-encoded delta decodes");
    assert_eq!(again, d, "decode(encode(x)) == x");
    if let Ok(rebuilt) = d.apply(seeds::base_index()) {
        rebuilt.validate().expect("an applied delta validates");
        assert_eq!(entries_digest(&rebuilt), d.entries_digest);
        assert_eq!(rebuilt.revision, d.revision);
    }
    true
}

/// [`delta`] on a valid envelope around `data`.
pub fn delta_body(data: &[u8]) -> bool {
    delta(&seal_envelope(
        DELTA_MAGIC,
        hummel_core::delta::DELTA_FORMAT_VERSION,
        data,
    ))
}

/// `hummel_core::pack::read_toc` on a whole pack, then `decode_chunk` on every chunk it lists.
pub fn pack(data: &[u8]) -> bool {
    let Ok(entries) = read_toc(Cursor::new(data), data.len() as u64) else {
        return false;
    };
    let trailer = data.len() - 24;
    let toc_offset = u64::from_le_bytes(data[trailer..trailer + 8].try_into().expect("8 bytes"));
    let mut again = PackWriter::new(Vec::new()).expect("in memory");
    for e in &entries {
        let end = e.offset + u64::from(e.stored_len);
        assert!(e.offset >= 16 && end <= toc_offset, "{e:?} inside the body");
        let stored = &data[e.offset as usize..end as usize];
        if let Ok(plain) = decode_chunk(e.codec, stored, e.len, &e.hash) {
            assert_eq!(plain.len(), e.len as usize);
            assert_eq!(Hash::of(&plain), e.hash);
        }
        again
            .add(e.hash, e.codec, stored, e.len)
            .expect("in memory");
    }
    // The same chunks written again read back as the same table, packed from the header on.
    let rewritten = again.finish().expect("in memory");
    let back = read_toc(Cursor::new(&rewritten.writer), rewritten.size).expect("a new pack reads");
    assert_eq!(back, rewritten.entries);
    let mut at = 16;
    for (a, b) in back.iter().zip(&entries) {
        assert_eq!(a.offset, at);
        assert_eq!(
            (a.hash, a.codec, a.stored_len, a.len),
            (b.hash, b.codec, b.stored_len, b.len)
        );
        at += u64::from(a.stored_len);
    }
    true
}

thread_local! {
    static COMPRESSOR: std::cell::RefCell<ChunkCompressor> =
        std::cell::RefCell::new(ChunkCompressor::new(1).expect("zstd level 1"));
}

/// `hummel_core::codec::decode_chunk`, the gate every downloaded chunk passes. Input:
/// `flags | u32 LE declared length | stored bytes`; flag 1: zstd (else raw), flag 2: the id is
/// that of what zstd itself makes of the bytes (so the happy path is reached), else the hash
/// of the stored bytes.
pub fn chunk(data: &[u8]) -> bool {
    if data.len() < 5 {
        return false;
    }
    let codec = if data[0] & 1 == 1 {
        Codec::Zstd
    } else {
        Codec::Raw
    };
    let len = u32::from_le_bytes(data[1..5].try_into().expect("4 bytes"));
    let stored = &data[5..];
    // The oracle: zstd's own bounded decompression, which must agree.
    let expected: Option<Vec<u8>> = match codec {
        Codec::Raw => (stored.len() == len as usize).then(|| stored.to_vec()),
        Codec::Zstd if len <= MAX_CHUNK_SIZE => zstd::bulk::decompress(stored, len as usize)
            .ok()
            .filter(|p| p.len() == len as usize),
        Codec::Zstd => None,
    };
    let id = match (&expected, data[0] & 2 != 0) {
        (Some(plain), true) => Hash::of(plain),
        _ => Hash::of(stored),
    };
    let accepted = match decode_chunk(codec, stored, len, &id) {
        Ok(plain) => {
            assert_eq!(Some(&plain), expected.as_ref(), "agrees with zstd");
            assert_eq!(Hash::of(&plain), id);
            true
        }
        Err(_) => {
            assert!(
                expected.as_deref().is_none_or(|p| Hash::of(p) != id),
                "refused a chunk zstd decodes to its id"
            );
            false
        }
    };
    // Whatever the bytes, the compressor's output decodes back to them.
    let (codec, packed) = COMPRESSOR.with(|c| c.borrow_mut().compress(stored));
    let plain = decode_chunk(codec, &packed, stored.len() as u32, &Hash::of(stored))
        .expect("a compressed chunk decodes");
    assert_eq!(plain, stored);
    accepted
}

/// The chunker parameters an input of [`chunker`] names: flag 1 takes the three u32 as they
/// are, otherwise they are folded into small ranges (odd and out-of-order values included).
fn chunker_config(data: &[u8]) -> Option<ChunkerConfig> {
    let word = |i: usize| {
        data.get(1 + 4 * i..5 + 4 * i)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    let (a, b, c) = (word(0)?, word(1)?, word(2)?);
    Some(if data[0] & 1 == 1 {
        ChunkerConfig {
            min: a,
            avg: b,
            max: c,
        }
    } else {
        ChunkerConfig {
            min: 60 + a % 4096,
            avg: 250 + b % 16384,
            max: 1000 + c % 65536,
        }
    })
}

/// `chunk_stream` with any parameters that pass `ChunkerConfig::validate` (an index from the
/// network names them, and the client re-chunks local files with them). Input:
/// `flags | 3 × u32 LE | content`.
pub fn chunker(data: &[u8]) -> bool {
    let Some(config) = chunker_config(data) else {
        return false;
    };
    if config.validate().is_err() {
        return false;
    }
    let content = &data[13..];
    let mut pos = 0usize;
    let digest = chunk_stream::<_, std::io::Error, _>(&config, content, |c| {
        let len = c.data.len();
        assert_eq!(c.offset, pos as u64, "chunks are contiguous");
        assert!(
            len > 0 && len <= config.max as usize,
            "{len} within {config:?}"
        );
        if pos + len < content.len() {
            assert!(len >= config.min as usize, "{len} within {config:?}");
        }
        assert_eq!(c.hash, Hash::of(c.data));
        pos += len;
        Ok(())
    })
    .expect("reading memory cannot fail");
    assert_eq!(pos, content.len());
    assert_eq!(digest.size, content.len() as u64);
    assert_eq!(digest.hash, Hash::of(content));
    true
}

/// `ClientState::decode` on `DEST/.hummel/state` (formats 1 and 2).
pub fn client_state(data: &[u8]) -> bool {
    let Ok(state) = ClientState::decode(data) else {
        return false;
    };
    let again = ClientState::decode(&state.encode()).expect("a re-encoded state decodes");
    assert_eq!(again, state, "decode(encode(x)) == x");
    true
}

/// `hummel_player::Profiles::decode` (the player's profiles file), and the link a player pastes
/// (`hummel_player::link::master_url`) on the same bytes as text.
pub fn profiles(data: &[u8]) -> bool {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(url) = hummel_player::link::master_url(text)
    {
        let again = hummel_player::link::master_url(&url).expect("a master URL is a link");
        assert_eq!(again, url, "a master URL names itself");
    }
    let Ok(p) = hummel_player::Profiles::decode(data) else {
        return false;
    };
    let again = hummel_player::Profiles::decode(&p.encode()).expect("re-encoded profiles decode");
    assert_eq!(again, p, "decode(encode(x)) == x");
    true
}

/// `hummel_store::http::parse_range` on a `Range` header value. Input: `u64 LE size | value`.
pub fn range(data: &[u8]) -> bool {
    let Some((size, value)) = data.split_first_chunk::<8>() else {
        return false;
    };
    let size = u64::from_le_bytes(*size);
    let Ok(value) = std::str::from_utf8(value) else {
        return false;
    };
    match parse_range(value, size) {
        RangeSpec::Part { start, end } => {
            assert!(start <= end && end < size, "{start}-{end} of {size}");
            let again = parse_range(&format!("bytes={start}-{end}"), size);
            assert_eq!(again, RangeSpec::Part { start, end });
            true
        }
        RangeSpec::Full => {
            let spec = value.trim().strip_prefix("bytes=");
            assert!(spec.is_none_or(|s| s.contains(',')), "{value:?} is a range");
            false
        }
        RangeSpec::Unsatisfiable => false,
    }
}

/// What a valid path is, written out independently of `RelPath::new`.
fn path_model(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_PATH_LEN
        && s.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.len() <= MAX_COMPONENT_LEN
                && !c.chars().any(|ch| ch == '\\' || ch.is_control())
        })
}

/// `RelPath::new`, through which every path of an index, a query and the CLI passes.
pub fn relpath(data: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(data) else {
        return false;
    };
    let parsed = RelPath::new(s);
    assert_eq!(parsed.is_ok(), path_model(s), "{s:?}: {parsed:?}");
    let Ok(p) = parsed else {
        return false;
    };
    assert_eq!(p.as_str(), s);
    let root = std::path::Path::new("/dest");
    let full = p.to_path(root);
    let below = full.strip_prefix(root).expect("stays below the root");
    assert_eq!(RelPath::from_path(below).as_ref(), Ok(&p));
    assert_eq!(round_trip_json(&p), p);
    let bytes = postcard::to_stdvec(&p).expect("serialises");
    assert_eq!(
        postcard::from_bytes::<RelPath>(&bytes).ok(),
        Some(p.clone())
    );
    if let Some(parent) = p.parent() {
        assert_eq!(RelPath::new(parent.as_str()).as_ref(), Ok(&parent));
        assert!(p.is_within(&parent));
        let rest = p.strip_dir(&parent).expect("strictly below its parent");
        assert_eq!(rest.as_str(), p.file_name());
        assert_eq!(parent.join(&rest), p);
    }
    let _ = p.is_windows_hostile();
    true
}

/// The key [`statement`] signs its sealed inputs with.
pub fn fuzz_key() -> KeyPair {
    KeyPair::from_secret(&[42; 32])
}

/// `magic | u32 format 1 | body | signature of it all by [`fuzz_key`]`: what a master that
/// holds the key would send, so mutations reach postcard and the checks after the signature.
pub fn seal_signed(magic: &[u8; 8], body: &[u8]) -> Vec<u8> {
    use ed25519_dalek::Signer as _;
    let mut out = magic.to_vec();
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(body);
    let key = ed25519_dalek::SigningKey::from_bytes(&fuzz_key().secret());
    let signature = key.sign(&out).to_bytes();
    out.extend_from_slice(&signature);
    out
}

/// `Statement::decode` and `Rotation::decode` (client: the statement in `GET /api/v1/revision`
/// and the key rotations beside it). Input: `flags | bytes`; flag 1: `bytes` is the body of a
/// statement (flag 2: of a rotation) that [`seal_signed`] seals and signs, else the whole
/// signed encoding as sent.
pub fn statement(data: &[u8]) -> bool {
    let Some((&flags, rest)) = data.split_first() else {
        return false;
    };
    let (as_statement, as_rotation) = match flags & 3 {
        1 => (seal_signed(STATEMENT_MAGIC, rest), Vec::new()),
        2 => (Vec::new(), seal_signed(ROTATION_MAGIC, rest)),
        _ => (rest.to_vec(), rest.to_vec()),
    };
    let mut accepted = false;
    if let Ok(s) = Statement::decode(&as_statement) {
        assert!(hummel_core::tree::TREE_FORMATS.contains(&s.tree_format));
        assert!(s.repository_id.len() <= hummel_core::statement::MAX_REPOSITORY_ID);
        // Accepted bytes are signed by the key they name: the same again with that key.
        if s.key == fuzz_key().public() {
            let again = Statement::decode(&s.sign(&fuzz_key())).expect("re-signed decodes");
            assert_eq!(again, s, "decode(sign(x)) == x");
        }
        let _ = s.expired(i64::MAX);
        accepted = true;
    }
    if let Ok(r) = Rotation::decode(&as_rotation) {
        if r.old_key == fuzz_key().public() {
            let again = Rotation::decode(&r.sign(&fuzz_key())).expect("re-signed decodes");
            assert_eq!(again, r, "decode(sign(x)) == x");
        }
        let path = rotation_path(
            r.old_key,
            r.new_key,
            &r.repository_id,
            std::slice::from_ref(&r),
        );
        assert!(path.is_some() || r.old_key == r.new_key || r.repository_id.len() > 64);
        accepted = true;
    }
    accepted
}

/// `tree::decode_proof` and the climb from a subtree to the tree digest with what it decoded
/// (client: the `X-Hummel-Proof` header of every index answer). Input: `flags | bytes`; flag 1:
/// `bytes` follow the proof's magic and format, else they are the whole encoding.
pub fn proof(data: &[u8]) -> bool {
    let Some((&flags, rest)) = data.split_first() else {
        return false;
    };
    let bytes = if flags & 1 == 1 {
        let mut b = PROOF_MAGIC.to_vec();
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(rest);
        b
    } else {
        rest.to_vec()
    };
    let Ok(p) = decode_proof(&bytes) else {
        return false;
    };
    assert_eq!(decode_proof(&encode_proof(&p)).expect("re-encoded"), p);
    // Climbing with it never panics, whatever it says; the master's own proof leads to the
    // tree digest, and a proof that does not fit the path is refused.
    let base = seeds::base_index();
    for dir in ["@mod", "@mod/addons"] {
        let dir = RelPath::new(dir).expect("a valid path");
        let sub = base.subtree(&dir).expect("a directory of the base");
        let result = tree::digest_through(&sub, Some(&dir), &p);
        if p.levels.len() != dir.components().count() {
            assert!(result.is_err());
        }
    }
    let hashes = TreeHashes::compute(base);
    let dir = RelPath::new("@mod/addons").expect("a valid path");
    let honest = hashes.proof(base, &dir).expect("a directory of the base");
    let sub = base.subtree(&dir).expect("a directory of the base");
    assert_eq!(
        tree::digest_through(&sub, Some(&dir), &honest).expect("fits"),
        hashes.digest()
    );
    true
}

/// `Hash` from text (`/blob/{hash}`, JSON bodies, `X-Hummel-Revision-Hash`).
pub fn hash_text(data: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(data) else {
        return false;
    };
    let model = s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    match s.parse::<Hash>() {
        Ok(h) => {
            assert!(model, "{s:?}");
            assert_eq!(h.to_hex(), s.to_ascii_lowercase());
            assert_eq!(round_trip_json(&h), h);
            true
        }
        Err(_) => {
            assert!(!model, "{s:?}");
            false
        }
    }
}

fn round_trip_json<T: Serialize + DeserializeOwned>(value: &T) -> T {
    let text = serde_json::to_vec(value).expect("serialises");
    serde_json::from_slice(&text).expect("its own JSON decodes")
}

fn json_case<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    body: &[u8],
) -> Option<T> {
    let value: T = serde_json::from_slice(body).ok()?;
    assert_eq!(round_trip_json(&value), value, "decode(encode(x)) == x");
    Some(value)
}

/// The JSON bodies between slaves, clients and the master, hashlists first. Input:
/// `selector | JSON`; the selector (mod 8) names the type.
pub fn wire_json(data: &[u8]) -> bool {
    let Some((&selector, body)) = data.split_first() else {
        return false;
    };
    match selector % 8 {
        0 => json_case::<SlaveHashlist>(body).is_some(),
        1 => json_case::<Heartbeat>(body)
            .inspect(|hb| {
                if let Some(c) = &hb.hashlist {
                    assert_eq!(c.proposed().seq, c.seq);
                    assert_eq!(c.base_version().seq, c.base);
                }
            })
            .is_some(),
        2 => json_case::<SlaveDirective>(body).is_some(),
        3 => json_case::<HashlistChanges>(body).is_some(),
        4 => json_case::<LocateRequest>(body).is_some(),
        5 => json_case::<LocateResponse>(body).is_some(),
        6 => json_case::<ClientReport>(body).is_some(),
        _ => json_case::<RevisionInfo>(body).is_some(),
    }
}

/// A slave's identity headers (`hummel_proto::identity`), as the master parses them from any
/// request to a slave route. Input: the four header values (id, key, nonce, signature)
/// separated by newlines; fewer parts leave the rest absent. Whatever parses must verify
/// without panicking, name its parts as given, and verify only over what was signed. The whole
/// input is also tried as a key file.
pub fn slave_proof(data: &[u8]) -> bool {
    use hummel_proto::identity::{
        SLAVE_ID_HEADER, SLAVE_KEY_HEADER, SLAVE_NONCE_HEADER, SLAVE_SIGNATURE_HEADER, SlaveKey,
        SlaveProof,
    };
    if let Ok(text) = std::str::from_utf8(data)
        && let Some(key) = SlaveKey::from_hex(text)
    {
        assert_eq!(key.to_hex(), text.trim().to_ascii_lowercase());
    }
    let parts: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let names = [
        SLAVE_ID_HEADER,
        SLAVE_KEY_HEADER,
        SLAVE_NONCE_HEADER,
        SLAVE_SIGNATURE_HEADER,
    ];
    let header = |name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .and_then(|i| parts.get(i).copied())
    };
    let Ok(proof) = SlaveProof::from_headers(header) else {
        return false;
    };
    assert_eq!(proof.slave_id.as_bytes(), parts[0]);
    assert_eq!(proof.nonce.to_string().as_bytes(), parts[2]);
    let body = Hash::of(b"{}");
    if proof.verify("POST", "/slave/heartbeat", &body).is_ok() {
        // A signature good for one request is good for no other.
        assert!(proof.verify("POST", "/slave/hashlist", &body).is_err());
        assert!(
            proof
                .verify("POST", "/slave/heartbeat", &Hash::of(b"[]"))
                .is_err()
        );
    }
    true
}
