//! Golden fixtures of the client's state file, `DEST/.hummel/state`: format 4 as written today
//! and formats 3, 2 and 1 as older clients left them. A dependency upgrade (postcard) or an edit that
//! changes the bytes fails here, so no client update silently loses its stat cache or the
//! names it owns. Regenerate deliberately with
//! `HUMMEL_BLESS=1 cargo test -p hummel-client --test golden` and commit the files.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use hummel_client::state::{CachedStat, ClientState, StatCache};
use hummel_core::Hash;
use hummel_core::statement::KeyPair;

fn golden(name: &str, actual: &[u8]) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    if std::env::var_os("HUMMEL_BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
    }
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; create it with HUMMEL_BLESS=1 cargo test -p hummel-client --test golden",
            path.display()
        )
    })
}

fn files() -> BTreeMap<String, CachedStat> {
    let mut files = BTreeMap::new();
    files.insert(
        "@mod/addons/ü b.pbo".to_string(),
        CachedStat {
            size: 4000,
            mtime_ns: 1_796_175_000_123_456_789,
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
    files
}

fn state_v3() -> ClientState {
    ClientState {
        master_url: "http://127.0.0.1:7070".into(),
        subtree: Some("mods/x".into()),
        revision: 20_261_202_014_530,
        dirs: vec!["@mod".into(), "@mod/addons".into()],
        packs: vec![1, 4, 70_000],
        bytes: 4100,
        files: files().into_iter().collect::<StatCache>(),
        repository_id: Some("00112233445566778899aabbccddeeff".into()),
        revision_hash: Some(Hash::of(b"index body")),
        owned: vec!["@mod".into(), "readme.txt".into()],
        tree_digest: None,
        signing_key: None,
    }
}

/// Format 4: format 3 and the signed tree digest and the pinned signing key.
fn state_v4() -> ClientState {
    ClientState {
        tree_digest: Some(Hash::of(b"tree")),
        signing_key: Some(KeyPair::from_secret(&[3; 32]).public()),
        ..state_v3()
    }
}

#[test]
fn state_format_4() {
    let s = state_v4();
    let committed = golden("state-v4.bin", &s.encode());
    assert_eq!(ClientState::decode(&committed).unwrap(), s);
    assert!(
        committed == s.encode(),
        "tests/fixtures/state-v4.bin changed: the state format changed (a dependency upgrade, \
         an edit). If that is deliberate, raise STATE_FORMAT and keep reading format 4, then \
         regenerate with HUMMEL_BLESS=1 cargo test -p hummel-client --test golden."
    );
}

/// The layout of format 3, before signed revisions.
#[derive(Serialize)]
struct StateV3<'a> {
    master_url: &'a str,
    subtree: Option<&'a str>,
    revision: u64,
    dirs: Vec<&'a str>,
    packs: Vec<u32>,
    bytes: u64,
    files: &'a StatCache,
    repository_id: Option<&'a str>,
    revision_hash: Option<Hash>,
    owned: Vec<&'a str>,
}

/// Format 3 is no longer written but must stay readable: no key is pinned, no tree digest
/// known (the next sync pins the key on first contact and fetches the index once).
#[test]
fn state_format_3_is_still_read() {
    let files: StatCache = files().into_iter().collect();
    let mut v3 = b"HUMLSTAT".to_vec();
    v3.extend_from_slice(&3u32.to_le_bytes());
    v3.extend(
        postcard::to_stdvec(&StateV3 {
            master_url: "http://127.0.0.1:7070",
            subtree: Some("mods/x"),
            revision: 20_261_202_014_530,
            dirs: vec!["@mod", "@mod/addons"],
            packs: vec![1, 4, 70_000],
            bytes: 4100,
            files: &files,
            repository_id: Some("00112233445566778899aabbccddeeff"),
            revision_hash: Some(Hash::of(b"index body")),
            owned: vec!["@mod", "readme.txt"],
        })
        .unwrap(),
    );
    let committed = golden("state-v3.bin", &v3);
    assert_eq!(committed, v3, "tests/fixtures/state-v3.bin changed");
    assert_eq!(ClientState::decode(&committed).unwrap(), state_v3());
}

/// The layout of format 2: the stat cache as a map.
#[derive(Serialize)]
struct StateV2<'a> {
    master_url: &'a str,
    subtree: Option<&'a str>,
    revision: u64,
    dirs: Vec<&'a str>,
    packs: Vec<u32>,
    bytes: u64,
    files: &'a BTreeMap<String, CachedStat>,
    repository_id: Option<&'a str>,
    revision_hash: Option<Hash>,
    owned: Vec<&'a str>,
}

/// Format 2 is no longer written but must stay readable, its stat cache whole.
#[test]
fn state_format_2_is_still_read() {
    let files = files();
    let mut v2 = b"HUMLSTAT".to_vec();
    v2.extend_from_slice(&2u32.to_le_bytes());
    v2.extend(
        postcard::to_stdvec(&StateV2 {
            master_url: "http://127.0.0.1:7070",
            subtree: Some("mods/x"),
            revision: 20_261_202_014_530,
            dirs: vec!["@mod", "@mod/addons"],
            packs: vec![1, 4, 70_000],
            bytes: 4100,
            files: &files,
            repository_id: Some("00112233445566778899aabbccddeeff"),
            revision_hash: Some(Hash::of(b"index body")),
            owned: vec!["@mod", "readme.txt"],
        })
        .unwrap(),
    );
    let committed = golden("state-v2.bin", &v2);
    assert_eq!(ClientState::decode(&committed).unwrap(), state_v3());
}

/// The layout of format 1, before revision identities and ownership.
#[derive(Serialize)]
struct StateV1<'a> {
    master_url: &'a str,
    subtree: Option<&'a str>,
    revision: u64,
    dirs: Vec<&'a str>,
    packs: Vec<u32>,
    bytes: u64,
    files: &'a BTreeMap<String, CachedStat>,
}

/// Format 1 is no longer written but must stay readable: its names become owned.
#[test]
fn state_format_1_is_still_read() {
    let files = files();
    let mut v1 = b"HUMLSTAT".to_vec();
    v1.extend_from_slice(&1u32.to_le_bytes());
    v1.extend(
        postcard::to_stdvec(&StateV1 {
            master_url: "http://127.0.0.1:7070",
            subtree: None,
            revision: 9,
            dirs: vec!["@mod", "@mod/addons"],
            packs: vec![1, 4],
            bytes: 4100,
            files: &files,
        })
        .unwrap(),
    );
    let committed = golden("state-v1.bin", &v1);
    let s = ClientState::decode(&committed).unwrap();
    assert_eq!(
        s,
        ClientState {
            master_url: "http://127.0.0.1:7070".into(),
            subtree: None,
            revision: 9,
            dirs: vec!["@mod".into(), "@mod/addons".into()],
            packs: vec![1, 4],
            bytes: 4100,
            files: files.into_iter().collect(),
            repository_id: None,
            revision_hash: None,
            owned: vec!["@mod".into(), "readme.txt".into()],
            tree_digest: None,
            signing_key: None,
        }
    );
}
