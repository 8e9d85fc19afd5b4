//! Signed revisions: the master's [`Statement`] about a revision, signed with its Ed25519 key,
//! and the [`Rotation`] with which an old key hands over to a new one.
//!
//! A statement names the repository, the revision number, the [tree digest](crate::tree) of
//! the whole revision, when it was built, when it was signed and until when it holds, and
//! whether the admin confirmed the mass delete it makes. A client that trusts the key (pinned
//! on first contact, or given) takes an index only when it leads to the signed tree digest,
//! and refuses an expired statement, so a master that stops signing (or someone replaying an
//! old answer) cannot hold a client back for longer than the expiry.
//!
//! # Statement format 1 (`HUMLSTMT`)
//!
//! ```text
//! "HUMLSTMT" | u32 LE format = 1 | postcard(Statement) | 64-byte Ed25519 signature
//! ```
//!
//! The signature (verified strictly) covers every byte before it, magic and format included,
//! under the key the statement names; a client then decides whether it trusts that key. At
//! most [`MAX_STATEMENT`] bytes; as text (JSON), lower-case hex.
//!
//! A statement about a revision a client pinned (`hummel sync --revision N`), which may be an
//! older one, is the same body behind another magic, `HUMLPINS`: the signature covers the
//! magic, so only a client that asked for that revision takes it ([`Statement::decode_pinned`]);
//! one that follows the master refuses it, and so cannot be held back by a replay of it.
//!
//! # Rotation format 1 (`HUMLROTN`)
//!
//! ```text
//! "HUMLROTN" | u32 LE format = 1 | postcard(Rotation) | 64-byte signature by old_key
//! ```
//!
//! A client that trusts the old key follows a chain of rotations to the key that signed the
//! statement, and trusts that key from then on.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::Hash;
use crate::tree::{TREE_FORMAT, TREE_FORMATS};

/// First bytes of an encoded, signed [`Statement`].
pub const STATEMENT_MAGIC: &[u8; 8] = b"HUMLSTMT";
/// The statement format this code writes and reads.
pub const STATEMENT_FORMAT: u32 = 1;
/// First bytes of an encoded, signed [`Statement`] about a revision a client asked for by
/// number (a pin), which need not be the current one. Same body and format as a statement;
/// only [`Statement::decode_pinned`] takes it, so it cannot pass for the current revision.
pub const PINNED_STATEMENT_MAGIC: &[u8; 8] = b"HUMLPINS";
/// First bytes of an encoded, signed [`Rotation`].
pub const ROTATION_MAGIC: &[u8; 8] = b"HUMLROTN";
/// The rotation format this code writes and reads.
pub const ROTATION_FORMAT: u32 = 1;
/// Largest encoded statement or rotation a decoder accepts.
pub const MAX_STATEMENT: usize = 1024;
/// Most rotations a client follows from its pinned key.
pub const MAX_ROTATIONS: usize = 64;
/// Longest repository id a statement may name.
pub const MAX_REPOSITORY_ID: usize = 64;
const SIGNATURE_LEN: usize = 64;

/// An Ed25519 public key. Its text form, the key's **fingerprint**, is its 64 lower-case hex
/// digits (`--trust` also takes them upper-case or behind `ed25519:`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PublicKey(pub [u8; 32]);

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::tree::to_hex(&self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", &self.to_string()[..16])
    }
}

impl FromStr for PublicKey {
    type Err = String;

    fn from_str(s: &str) -> Result<PublicKey, String> {
        let t = s.trim();
        let t = t.strip_prefix("ed25519:").unwrap_or(t);
        let bytes = crate::tree::from_hex(t, 32)
            .filter(|b| b.len() == 32)
            .ok_or_else(|| {
                format!(
                    "not a signing key fingerprint (64 hex digits): {:?}",
                    short(s)
                )
            })?;
        let key = PublicKey(bytes.try_into().expect("32 bytes"));
        VerifyingKey::from_bytes(&key.0)
            .map_err(|_| format!("{t} is not an Ed25519 public key"))?;
        Ok(key)
    }
}

fn short(s: &str) -> String {
    s.chars().take(80).collect()
}

/// A signing key (the master's). Its `Debug` form shows the public half only.
#[derive(Clone)]
pub struct KeyPair(SigningKey);

impl KeyPair {
    /// The key whose secret (seed) is `secret`: 32 random bytes make a new key.
    pub fn from_secret(secret: &[u8; 32]) -> KeyPair {
        KeyPair(SigningKey::from_bytes(secret))
    }

    /// The secret, to store.
    pub fn secret(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.0.sign(message).to_bytes()
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPair({})", self.public())
    }
}

/// What the master signs about a revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    /// The repository's id (hex, as in `RevisionInfo::repository_id`).
    pub repository_id: String,
    /// The revision number.
    pub revision: u64,
    /// How `tree_digest` is computed ([`TREE_FORMAT`]).
    pub tree_format: u32,
    /// The tree digest of the whole revision.
    pub tree_digest: Hash,
    /// When the revision was built (seconds since the epoch).
    pub created_unix: i64,
    /// When this statement was signed.
    pub signed_unix: i64,
    /// From this second on the statement no longer holds.
    pub expires_unix: i64,
    /// The admin confirmed the mass delete this revision makes.
    pub mass_delete_confirmed: bool,
    /// The key that signed it.
    pub key: PublicKey,
}

/// A statement or rotation that was refused.
#[derive(Debug, thiserror::Error)]
pub enum StatementError {
    /// Not a statement or rotation, truncated, too large, or of another format.
    #[error("invalid {what}: {why}")]
    Invalid {
        /// `signed statement` or `key rotation`.
        what: &'static str,
        /// Why.
        why: String,
    },
    /// The signature does not verify under the key it names.
    #[error("the {what}'s signature does not verify")]
    Signature {
        /// `signed statement` or `key rotation`.
        what: &'static str,
    },
}

/// `magic | format | postcard(value) | signature by key`.
fn seal<T: Serialize>(magic: &[u8; 8], format: u32, value: &T, key: &KeyPair) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(magic);
    out.extend_from_slice(&format.to_le_bytes());
    let mut out = postcard::to_extend(value, out).expect("a statement serialises");
    let signature = key.sign(&out);
    out.extend_from_slice(&signature);
    out
}

/// The value in a sealed envelope and the signature with the signed bytes, unverified.
fn open<'a, T: Deserialize<'a>>(
    magic: &[u8; 8],
    format: u32,
    bytes: &'a [u8],
    what: &'static str,
) -> Result<(T, &'a [u8], [u8; SIGNATURE_LEN]), StatementError> {
    let invalid = |why: String| StatementError::Invalid { what, why };
    if bytes.len() > MAX_STATEMENT {
        return Err(invalid(format!(
            "{} bytes (at most {MAX_STATEMENT})",
            bytes.len()
        )));
    }
    if bytes.len() < 12 + SIGNATURE_LEN || &bytes[..8] != magic {
        return Err(invalid("bad magic or truncated".into()));
    }
    let found = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if found != format {
        return Err(invalid(format!(
            "format {found} (this build reads {format})"
        )));
    }
    let (signed, signature) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
    let (value, rest) = postcard::take_from_bytes::<T>(&signed[12..])
        .map_err(|e| invalid(format!("undecodable: {e}")))?;
    if !rest.is_empty() {
        return Err(invalid("trailing bytes".into()));
    }
    Ok((value, signed, signature.try_into().expect("64 bytes")))
}

fn check_signature(
    key: &PublicKey,
    signed: &[u8],
    signature: &[u8; SIGNATURE_LEN],
    what: &'static str,
) -> Result<(), StatementError> {
    let vk = VerifyingKey::from_bytes(&key.0).map_err(|_| StatementError::Signature { what })?;
    vk.verify_strict(signed, &ed25519_dalek::Signature::from_bytes(signature))
        .map_err(|_| StatementError::Signature { what })
}

impl Statement {
    /// Encodes and signs with `key` (which must be [`Statement::key`]'s).
    pub fn sign(&self, key: &KeyPair) -> Vec<u8> {
        assert_eq!(
            self.key,
            key.public(),
            "a statement names the key that signs it"
        );
        seal(STATEMENT_MAGIC, STATEMENT_FORMAT, self, key)
    }

    /// Encodes and signs with `key` as a statement about a pinned revision
    /// ([`PINNED_STATEMENT_MAGIC`]).
    pub fn sign_pinned(&self, key: &KeyPair) -> Vec<u8> {
        assert_eq!(
            self.key,
            key.public(),
            "a statement names the key that signs it"
        );
        seal(PINNED_STATEMENT_MAGIC, STATEMENT_FORMAT, self, key)
    }

    /// Decodes a signed statement and checks its signature under the key it names (whether
    /// that key is trusted is the caller's decision), its tree format and repository id.
    pub fn decode(bytes: &[u8]) -> Result<Statement, StatementError> {
        Statement::decode_as(STATEMENT_MAGIC, bytes)
    }

    /// [`Statement::decode`] for a statement about a pinned revision: one signed with
    /// [`Statement::sign_pinned`] (a statement about the current revision is taken too).
    pub fn decode_pinned(bytes: &[u8]) -> Result<Statement, StatementError> {
        if bytes.starts_with(STATEMENT_MAGIC) {
            return Statement::decode(bytes);
        }
        Statement::decode_as(PINNED_STATEMENT_MAGIC, bytes)
    }

    fn decode_as(magic: &[u8; 8], bytes: &[u8]) -> Result<Statement, StatementError> {
        const WHAT: &str = "signed statement";
        let (s, signed, signature): (Statement, _, _) = open(magic, STATEMENT_FORMAT, bytes, WHAT)?;
        let invalid = |why: String| StatementError::Invalid { what: WHAT, why };
        if s.repository_id.len() > MAX_REPOSITORY_ID
            || s.repository_id.chars().any(char::is_control)
        {
            return Err(invalid("bad repository id".into()));
        }
        if !TREE_FORMATS.contains(&s.tree_format) {
            return Err(invalid(format!(
                "tree format {} (this build knows 1 to {TREE_FORMAT}; update hummel)",
                s.tree_format
            )));
        }
        check_signature(&s.key, signed, &signature, WHAT)?;
        Ok(s)
    }

    /// True when the statement no longer holds at `now_unix`.
    pub fn expired(&self, now_unix: i64) -> bool {
        now_unix >= self.expires_unix
    }
}

/// An old key's handover to a new one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    /// The repository (hex id).
    pub repository_id: String,
    /// The key that signs this rotation and is retired.
    pub old_key: PublicKey,
    /// The key that signs from now on.
    pub new_key: PublicKey,
    /// When the rotation was made.
    pub rotated_unix: i64,
}

impl Rotation {
    /// Encodes and signs with `old` (which must be [`Rotation::old_key`]'s).
    pub fn sign(&self, old: &KeyPair) -> Vec<u8> {
        assert_eq!(self.old_key, old.public(), "the old key signs a rotation");
        seal(ROTATION_MAGIC, ROTATION_FORMAT, self, old)
    }

    /// Decodes a signed rotation and checks its signature under its old key.
    pub fn decode(bytes: &[u8]) -> Result<Rotation, StatementError> {
        const WHAT: &str = "key rotation";
        let (r, signed, signature): (Rotation, _, _) =
            open(ROTATION_MAGIC, ROTATION_FORMAT, bytes, WHAT)?;
        if r.repository_id.len() > MAX_REPOSITORY_ID {
            return Err(StatementError::Invalid {
                what: WHAT,
                why: "bad repository id".into(),
            });
        }
        check_signature(&r.old_key, signed, &signature, WHAT)?;
        Ok(r)
    }
}

/// The chain of `rotations` (each verified already) that leads from `trusted` to `target` in
/// `repository_id`, at most [`MAX_ROTATIONS`] long: the keys handed over to, in order. `None`
/// when there is none.
pub fn rotation_path(
    trusted: PublicKey,
    target: PublicKey,
    repository_id: &str,
    rotations: &[Rotation],
) -> Option<Vec<PublicKey>> {
    let mut path = Vec::new();
    let mut at = trusted;
    while at != target {
        if path.len() >= MAX_ROTATIONS {
            return None;
        }
        let next = rotations
            .iter()
            .find(|r| r.old_key == at && r.repository_id == repository_id)?;
        at = next.new_key;
        if path.contains(&at) || at == trusted {
            return None;
        }
        path.push(at);
    }
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn key(n: u8) -> KeyPair {
        KeyPair::from_secret(&[n; 32])
    }

    fn statement(k: &KeyPair) -> Statement {
        Statement {
            repository_id: "00112233445566778899aabbccddeeff".into(),
            revision: 20_261_202_014_530,
            tree_format: TREE_FORMAT,
            tree_digest: Hash::of(b"tree"),
            created_unix: 1_796_175_930,
            signed_unix: 1_796_175_931,
            expires_unix: 1_796_175_931 + 30 * 86_400,
            mass_delete_confirmed: true,
            key: k.public(),
        }
    }

    #[test]
    fn a_statement_verifies_under_its_key_only() {
        let k = key(1);
        let s = statement(&k);
        let bytes = s.sign(&k);
        assert_eq!(Statement::decode(&bytes).unwrap(), s);
        // Any flipped bit: refused (signature, or undecodable).
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 1;
            assert!(Statement::decode(&b).is_err(), "bit flip at {i} accepted");
        }
        // Naming another key than the one that signed: refused.
        let other = key(2);
        let mut forged = s.clone();
        forged.key = other.public();
        let mut b = seal(STATEMENT_MAGIC, STATEMENT_FORMAT, &forged, &k);
        assert!(matches!(
            Statement::decode(&b),
            Err(StatementError::Signature { .. })
        ));
        b.truncate(20);
        assert!(Statement::decode(&b).is_err());
        assert!(!s.expired(s.expires_unix - 1));
        assert!(s.expired(s.expires_unix));
    }

    #[test]
    fn a_pinned_statement_passes_only_where_a_pin_was_asked_for() {
        let key = KeyPair::from_secret(&[7; 32]);
        let s = statement(&key);
        let pinned = s.sign_pinned(&key);
        assert!(Statement::decode(&pinned).is_err());
        assert_eq!(Statement::decode_pinned(&pinned).unwrap(), s);
        assert_eq!(Statement::decode_pinned(&s.sign(&key)).unwrap(), s);
        // The magic is signed: relabelled, it no longer verifies.
        let mut relabelled = pinned.clone();
        relabelled[..8].copy_from_slice(STATEMENT_MAGIC);
        assert!(matches!(
            Statement::decode(&relabelled),
            Err(StatementError::Signature { .. })
        ));
    }

    #[test]
    fn another_format_or_tree_format_is_refused() {
        let k = key(1);
        let mut s = statement(&k);
        s.tree_format = 3;
        let e = Statement::decode(&s.sign(&k)).unwrap_err().to_string();
        assert!(e.contains("tree format 3"), "{e}");
        let mut b = statement(&k).sign(&k);
        b[8] = 9;
        let e = Statement::decode(&b).unwrap_err().to_string();
        assert!(e.contains("format 9"), "{e}");
    }

    #[test]
    fn rotations_chain_from_the_trusted_key() {
        let (a, b, c) = (key(1), key(2), key(3));
        let repo = "r";
        let rot = |o: &KeyPair, n: &KeyPair| {
            Rotation::decode(
                &Rotation {
                    repository_id: repo.into(),
                    old_key: o.public(),
                    new_key: n.public(),
                    rotated_unix: 5,
                }
                .sign(o),
            )
            .unwrap()
        };
        let chain = vec![rot(&b, &c), rot(&a, &b)];
        assert_eq!(
            rotation_path(a.public(), c.public(), repo, &chain),
            Some(vec![b.public(), c.public()])
        );
        assert_eq!(
            rotation_path(a.public(), a.public(), repo, &chain),
            Some(vec![])
        );
        assert_eq!(rotation_path(c.public(), a.public(), repo, &chain), None);
        assert_eq!(rotation_path(a.public(), c.public(), "other", &chain), None);
        // A loop ends.
        let looping = vec![rot(&a, &b), rot(&b, &a)];
        assert_eq!(rotation_path(a.public(), c.public(), repo, &looping), None);
        // A rotation signed by another key than its old one: refused.
        let forged = seal(
            ROTATION_MAGIC,
            ROTATION_FORMAT,
            &Rotation {
                repository_id: repo.into(),
                old_key: a.public(),
                new_key: c.public(),
                rotated_unix: 5,
            },
            &c,
        );
        assert!(Rotation::decode(&forged).is_err());
    }

    #[test]
    fn fingerprints_parse_in_their_forms() {
        let k = key(7).public();
        let hex = k.to_string();
        assert_eq!(hex.len(), 64);
        assert_eq!(hex.parse::<PublicKey>().unwrap(), k);
        assert_eq!(
            format!("ed25519:{}", hex.to_uppercase())
                .parse::<PublicKey>()
                .unwrap(),
            k
        );
        assert!("abc".parse::<PublicKey>().is_err());
        assert!(format!("{hex}00").parse::<PublicKey>().is_err());
    }

    proptest! {
        /// No bytes make the decoders panic, and what they accept carries a valid signature.
        #[test]
        fn decoders_take_any_bytes(junk in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Statement::decode(&junk);
            let _ = Rotation::decode(&junk);
            let mut b = STATEMENT_MAGIC.to_vec();
            b.extend_from_slice(&STATEMENT_FORMAT.to_le_bytes());
            b.extend_from_slice(&junk);
            prop_assert!(Statement::decode(&b).is_err() || junk.len() >= 64);
        }
    }
}
