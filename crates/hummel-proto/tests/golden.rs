//! Golden fixtures of the JSON bodies between slaves, clients and the master, the hashlists
//! first: masters, slaves and clients of different versions talk to each other, so a field
//! renamed, retyped or dropped by an edit or a serde upgrade must fail here, not in the field.
//! Each test decodes the committed file, then requires the same text from encoding. Regenerate
//! deliberately with `HUMMEL_BLESS=1 cargo test -p hummel-proto --test golden` and commit.

use std::fmt::Debug;
use std::path::PathBuf;

use serde::Serialize;
use serde::de::DeserializeOwned;

use hummel_core::Hash;
use hummel_core::statement::{KeyPair, Rotation, Statement};
use hummel_core::tree::{TREE_FORMAT_V1, to_hex};
use hummel_proto::api::{
    Assignment, ClientReport, HashlistChanges, HashlistVersion, Heartbeat, LocateRequest,
    LocateResponse, RevisionInfo, SlaveDirective, SlaveEndpoint, SlaveHashlist,
};

fn check<T: Serialize + DeserializeOwned + PartialEq + Debug>(name: &str, value: &T) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let actual = serde_json::to_string_pretty(value).unwrap() + "\n";
    if std::env::var_os("HUMMEL_BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &actual).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; create it with HUMMEL_BLESS=1 cargo test -p hummel-proto --test golden",
            path.display()
        )
    });
    assert_eq!(&serde_json::from_str::<T>(&committed).unwrap(), value);
    assert!(
        committed == actual,
        "tests/fixtures/{name} changed: the wire format changed (an edit, a serde upgrade). \
         Older peers still send and expect the committed form; if the change is deliberate \
         and compatible, regenerate with HUMMEL_BLESS=1 cargo test -p hummel-proto --test \
         golden.\ncommitted:\n{committed}\nnow:\n{actual}"
    );
}

fn h(n: u8) -> Hash {
    Hash::of(&[n])
}

fn changes() -> HashlistChanges {
    HashlistChanges {
        epoch: 1 << 40,
        base: 4,
        seq: 6,
        added: vec![h(1), h(2)],
        removed: vec![h(3)],
    }
}

#[test]
fn slave_hashlist() {
    check(
        "slave-hashlist.json",
        &SlaveHashlist {
            slave_id: "0f1e2d3c4b5a6978".into(),
            url: "http://127.0.0.1:7071".into(),
            quota: Some(1 << 40),
            used: 33_554_432,
            packs: vec![h(1), h(2)],
            read_token_digest: None,
        },
    );
}

/// The hashlist of a slave that guards its packs with the read token.
#[test]
fn slave_hashlist_with_a_read_token() {
    check(
        "slave-hashlist-private.json",
        &SlaveHashlist {
            slave_id: "0f1e2d3c4b5a6978".into(),
            url: "https://mirror1.example:7071".into(),
            quota: None,
            used: 0,
            packs: vec![],
            read_token_digest: Some(hummel_proto::auth::read_token_digest("reader")),
        },
    );
}

#[test]
fn heartbeat_with_hashlist_changes() {
    check(
        "heartbeat.json",
        &Heartbeat {
            slave_id: "0f1e2d3c4b5a6978".into(),
            used: 50_331_648,
            packs: 3,
            replicating: 1,
            corrupt: vec![h(9)],
            hashlist: Some(changes()),
            bytes_served: Some(1_048_576),
        },
    );
}

/// A slave without an acknowledged version (or from before incremental hashlists) sends no
/// `hashlist` field at all.
#[test]
fn heartbeat_without_changes() {
    check(
        "heartbeat-plain.json",
        &Heartbeat {
            slave_id: "0f1e2d3c4b5a6978".into(),
            used: 0,
            packs: 0,
            replicating: 0,
            corrupt: vec![],
            hashlist: None,
            bytes_served: None,
        },
    );
}

#[test]
fn slave_directive() {
    check(
        "slave-directive.json",
        &SlaveDirective {
            slave_id: "0f1e2d3c4b5a6978".into(),
            assign: vec![Assignment {
                pack: h(4),
                size: 16 << 20,
                sources: vec![
                    "http://127.0.0.1:7072".into(),
                    "http://127.0.0.1:7070".into(),
                ],
            }],
            drop: vec![h(5)],
            heartbeat_interval_ms: 3000,
            hashlist: Some(HashlistVersion {
                epoch: 1 << 40,
                seq: 6,
            }),
        },
    );
}

#[test]
fn locate() {
    check("locate-request.json", &LocateRequest { packs: vec![1, 7] });
    check(
        "locate-response.json",
        &LocateResponse {
            slaves: vec![
                SlaveEndpoint {
                    id: "0f1e2d3c4b5a6978".into(),
                    url: "http://127.0.0.1:7071".into(),
                },
                SlaveEndpoint {
                    id: "master".into(),
                    url: "http://127.0.0.1:7070".into(),
                },
            ],
            holders: vec![vec![0], vec![1]],
            fallback: Some(1),
            target: Some(2),
        },
    );
}

#[test]
fn client_report() {
    check(
        "client-report.json",
        &ClientReport {
            client_id: "00112233445566778899aabbccddeeff".into(),
            client_key: None,
            revision: 20_261_202_014_530,
            path: "mods/x".into(),
            files: 2,
            bytes: 4100,
            packs: vec![1, 7],
            bad_slaves: vec!["0f1e2d3c4b5a6978".into()],
            pinned: None,
        },
    );
}

/// A report with its client's key, as clients send it since reports are tied to keys.
#[test]
fn client_report_with_key() {
    check(
        "client-report-keyed.json",
        &ClientReport {
            client_id: "00112233445566778899aabbccddeeff".into(),
            client_key: Some(
                "8f0e1d2c3b4a59687766554433221100ffeeddccbbaa99887766554433221100".into(),
            ),
            revision: 20_261_202_014_530,
            path: "mods/x".into(),
            files: 2,
            bytes: 4100,
            packs: vec![1, 7],
            bad_slaves: vec![],
            pinned: None,
        },
    );
}

#[test]
fn revision_info() {
    // Ed25519 signatures are deterministic: the same key and statement, the same bytes.
    let (old, key) = (
        KeyPair::from_secret(&[1; 32]),
        KeyPair::from_secret(&[2; 32]),
    );
    let statement = Statement {
        repository_id: "00112233445566778899aabbccddeeff".into(),
        revision: 20_261_202_014_530,
        tree_format: TREE_FORMAT_V1,
        tree_digest: h(9),
        created_unix: 1_796_175_930,
        signed_unix: 1_796_175_931,
        expires_unix: 1_798_767_931,
        mass_delete_confirmed: true,
        key: key.public(),
    };
    let rotation = Rotation {
        repository_id: "00112233445566778899aabbccddeeff".into(),
        old_key: old.public(),
        new_key: key.public(),
        rotated_unix: 1_796_175_000,
    };
    check(
        "revision.json",
        &RevisionInfo {
            revision: Some(20_261_202_014_530),
            created_unix: Some(1_796_175_930),
            files: 2,
            bytes: 4100,
            index_hash: Some(h(7)),
            repository_id: Some("00112233445566778899aabbccddeeff".into()),
            mass_delete_confirmed: true,
            statement: Some(to_hex(&statement.sign(&key))),
            key_rotations: vec![to_hex(&rotation.sign(&old))],
        },
    );
}

/// A signed slave request (`hummel_proto::identity`): the signed message's bytes and the four
/// headers, from a fixed key, nonce and body. Ed25519 signs deterministically, so the same
/// inputs give the same signature; an edit of the message layout, or of the key derivation,
/// fails here (and every slave would then be refused by masters of the other version).
#[test]
fn slave_request_signature() {
    use hummel_proto::identity::{SlaveKey, SlaveProof, signed_message};
    let key = SlaveKey::from_secret([0x42; 32]);
    let body = br#"{"slave_id":"0f1e2d3c4b5a6978"}"#;
    let nonce = 1_796_175_930_123;
    let message = signed_message(
        "POST",
        "/slave/heartbeat",
        "0f1e2d3c4b5a6978",
        nonce,
        &Hash::of(body),
    );
    let headers = key.sign_request("POST", "/slave/heartbeat", "0f1e2d3c4b5a6978", nonce, body);
    let mut text = format!(
        "message {}\n",
        message
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    for (name, value) in &headers {
        text.push_str(&format!("{name}: {value}\n"));
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/slave-request.txt");
    if std::env::var_os("HUMMEL_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &text).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap();
    assert_eq!(committed, text, "the signed slave request changed");
    // The committed headers verify.
    let lines: Vec<(&str, &str)> = committed
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(": "))
        .collect();
    let proof = SlaveProof::from_headers(|name| {
        lines
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_bytes())
    })
    .unwrap();
    assert_eq!(
        proof.verify("POST", "/slave/heartbeat", &Hash::of(body)),
        Ok(())
    );
}
