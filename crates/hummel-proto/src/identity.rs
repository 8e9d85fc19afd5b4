//! Slave identity: every slave holds an Ed25519 key of its own, and every slave → master
//! request proves it.
//!
//! The shared slave token says "one of our slaves"; it does not say which. So that no holder
//! of the token can change another slave's URL or claims, each slave makes a key pair in its
//! data folder on first start (`DATA/slave-key`, owner-only) and signs every request to the
//! master with it. The master enrolls the public key with the slave's id at the first signed
//! hashlist (the slave token is checked as well) and from then on accepts requests for that id
//! only when they are signed by that key. Another key for an enrolled id is refused
//! (403 `slave_identity_mismatch`) until the admin removes the slave (write token).
//!
//! A signed request carries four headers:
//!
//! | header | value |
//! | --- | --- |
//! | [`SLAVE_ID_HEADER`] | the slave id (the same as in the body) |
//! | [`SLAVE_KEY_HEADER`] | the public key, 64 hex digits |
//! | [`SLAVE_NONCE_HEADER`] | a number larger than any this slave used before, decimal |
//! | [`SLAVE_SIGNATURE_HEADER`] | the Ed25519 signature of [`signed_message`], 128 hex digits |
//!
//! The signed message binds the method, the path, the id, the nonce and the BLAKE3 hash of the
//! body, under a domain-separation prefix, so a signature is good for one request only. The
//! master keeps the highest nonce each slave used and refuses a lower or equal one
//! (409 `slave_nonce_stale`, naming the highest in [`SLAVE_NONCE_HEADER`] of the answer): a
//! recorded request cannot be replayed. A slave uses its clock in milliseconds as the nonce,
//! or one more than its last; after such a refusal it continues above the master's number.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use subtle::ConstantTimeEq;

use hummel_core::Hash;

/// Request header: the slave id the request speaks for.
pub const SLAVE_ID_HEADER: &str = "X-Hummel-Slave-Id";
/// Request header: the slave's public key in hex.
pub const SLAVE_KEY_HEADER: &str = "X-Hummel-Slave-Key";
/// Request header: the request's nonce (decimal); in a 409 `slave_nonce_stale` answer, the
/// highest nonce the master accepted from this slave.
pub const SLAVE_NONCE_HEADER: &str = "X-Hummel-Slave-Nonce";
/// Request header: the signature in hex.
pub const SLAVE_SIGNATURE_HEADER: &str = "X-Hummel-Slave-Signature";

/// The prefix of every signed message: what it is, and the version of the scheme.
const DOMAIN: &[u8] = b"hummel slave request v1\0";

/// Why a request's proof of identity was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// No identity headers at all (a slave from before identities).
    #[error(
        "this request is not signed by a slave key (update the slave: slaves sign their \
         requests since slave identities)"
    )]
    Missing,
    /// A header is missing or not of its form.
    #[error("malformed slave identity header: {0}")]
    Malformed(&'static str),
    /// The signature does not verify with the key it names.
    #[error("the slave signature does not verify")]
    BadSignature,
}

/// A slave's private key. Its `Debug` form shows only the public key.
#[derive(Clone)]
pub struct SlaveKey(SigningKey);

impl std::fmt::Debug for SlaveKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SlaveKey({})", self.public().fingerprint())
    }
}

impl SlaveKey {
    /// The key whose secret is these 32 bytes (from a random source, or read back from its file).
    pub fn from_secret(secret: [u8; 32]) -> SlaveKey {
        SlaveKey(SigningKey::from_bytes(&secret))
    }

    /// The key from its file form: 64 hex digits (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Option<SlaveKey> {
        decode_hex::<32>(text.trim()).map(SlaveKey::from_secret)
    }

    /// The file form: 64 lower-case hex digits.
    pub fn to_hex(&self) -> String {
        encode_hex(self.0.as_bytes())
    }

    /// The public half, which the master enrolls.
    pub fn public(&self) -> SlavePublicKey {
        SlavePublicKey(self.0.verifying_key().to_bytes())
    }

    /// The four identity headers (name, value) of a request `method path` of slave `slave_id`
    /// with `body`, using `nonce`.
    pub fn sign_request(
        &self,
        method: &str,
        path: &str,
        slave_id: &str,
        nonce: u64,
        body: &[u8],
    ) -> [(&'static str, String); 4] {
        let message = signed_message(method, path, slave_id, nonce, &Hash::of(body));
        let signature = self.0.sign(&message);
        [
            (SLAVE_ID_HEADER, slave_id.to_string()),
            (SLAVE_KEY_HEADER, self.public().to_hex()),
            (SLAVE_NONCE_HEADER, nonce.to_string()),
            (SLAVE_SIGNATURE_HEADER, encode_hex(&signature.to_bytes())),
        ]
    }
}

/// A slave's public key, as the master enrolls it.
#[derive(Clone, Copy, Debug)]
pub struct SlavePublicKey(pub [u8; 32]);

impl PartialEq for SlavePublicKey {
    /// Constant time.
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for SlavePublicKey {}

impl SlavePublicKey {
    /// 64 lower-case hex digits.
    pub fn to_hex(&self) -> String {
        encode_hex(&self.0)
    }

    /// From 64 hex digits.
    pub fn from_hex(text: &str) -> Option<SlavePublicKey> {
        decode_hex::<32>(text).map(SlavePublicKey)
    }

    /// A short form for status pages and logs: the first 16 hex digits of the BLAKE3 hash of
    /// the key.
    pub fn fingerprint(&self) -> String {
        Hash::of(&self.0).to_hex()[..16].to_string()
    }
}

/// The bytes a slave signs for one request: [`DOMAIN`], then the method, path, slave id and
/// nonce, each followed by a NUL byte, then the 32 bytes of the body's BLAKE3 hash. No part
/// can contain a NUL (an HTTP method, path or header value cannot), so the parts cannot be
/// shifted into each other.
pub fn signed_message(
    method: &str,
    path: &str,
    slave_id: &str,
    nonce: u64,
    body_hash: &Hash,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + method.len() + path.len() + slave_id.len() + 60);
    m.extend_from_slice(DOMAIN);
    for part in [method, path, slave_id, &nonce.to_string()] {
        m.extend_from_slice(part.as_bytes());
        m.push(0);
    }
    m.extend_from_slice(&body_hash.0);
    m
}

/// The identity headers of a request, parsed but not yet verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlaveProof {
    /// The id the request speaks for.
    pub slave_id: String,
    /// The key it claims to be signed with.
    pub key: SlavePublicKey,
    /// Its nonce.
    pub nonce: u64,
    signature: [u8; 64],
}

impl SlaveProof {
    /// Parses the four headers; `header(name)` gives a header's value. No header at all is
    /// [`ProofError::Missing`]; some but not all, or a malformed one, [`ProofError::Malformed`].
    pub fn from_headers<'a>(
        header: impl Fn(&str) -> Option<&'a [u8]>,
    ) -> Result<SlaveProof, ProofError> {
        let names = [
            SLAVE_ID_HEADER,
            SLAVE_KEY_HEADER,
            SLAVE_NONCE_HEADER,
            SLAVE_SIGNATURE_HEADER,
        ];
        let values: Vec<Option<&[u8]>> = names.iter().map(|n| header(n)).collect();
        if values.iter().all(Option::is_none) {
            return Err(ProofError::Missing);
        }
        let text = |i: usize, what: &'static str| -> Result<&str, ProofError> {
            values[i]
                .and_then(|v| std::str::from_utf8(v).ok())
                .ok_or(ProofError::Malformed(what))
        };
        let slave_id = text(0, "slave id")?;
        if slave_id.is_empty() || slave_id.len() > 128 || slave_id.chars().any(char::is_control) {
            return Err(ProofError::Malformed("slave id"));
        }
        let key = SlavePublicKey::from_hex(text(1, "slave key")?)
            .ok_or(ProofError::Malformed("slave key"))?;
        let nonce_text = text(2, "nonce")?;
        // Decimal digits in their one canonical form (no sign, no leading zero).
        let nonce = nonce_text
            .parse::<u64>()
            .ok()
            .filter(|n| n.to_string() == nonce_text)
            .ok_or(ProofError::Malformed("nonce"))?;
        let signature =
            decode_hex::<64>(text(3, "signature")?).ok_or(ProofError::Malformed("signature"))?;
        Ok(SlaveProof {
            slave_id: slave_id.to_string(),
            key,
            nonce,
            signature,
        })
    }

    /// Checks the signature over `method path` with a body whose BLAKE3 hash is `body_hash`
    /// (strict Ed25519: no malleable signatures, no weak keys).
    pub fn verify(&self, method: &str, path: &str, body_hash: &Hash) -> Result<(), ProofError> {
        let key = VerifyingKey::from_bytes(&self.key.0).map_err(|_| ProofError::BadSignature)?;
        let message = signed_message(method, path, &self.slave_id, self.nonce, body_hash);
        key.verify_strict(&message, &Signature::from_bytes(&self.signature))
            .map_err(|_| ProofError::BadSignature)
    }
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    // Hex digits only (`from_str_radix` alone would take a sign).
    if text.len() != 2 * N || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers<'a>(h: &'a [(&'static str, String); 4]) -> impl Fn(&str) -> Option<&'a [u8]> {
        move |name| {
            h.iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_bytes())
        }
    }

    #[test]
    fn a_signed_request_verifies_only_as_signed() {
        let key = SlaveKey::from_secret([7; 32]);
        let body = br#"{"slave_id":"s1"}"#;
        let signed = key.sign_request("POST", "/slave/hashlist", "s1", 42, body);
        let proof = SlaveProof::from_headers(headers(&signed)).unwrap();
        assert_eq!(proof.slave_id, "s1");
        assert_eq!(proof.nonce, 42);
        assert_eq!(proof.key, key.public());
        let hash = Hash::of(body);
        assert_eq!(proof.verify("POST", "/slave/hashlist", &hash), Ok(()));
        // Another route, body, id or nonce: refused.
        let bad = Err(ProofError::BadSignature);
        assert_eq!(proof.verify("POST", "/slave/heartbeat", &hash), bad);
        assert_eq!(
            proof.verify("POST", "/slave/hashlist", &Hash::of(b"{}")),
            bad
        );
        let mut other = proof.clone();
        other.slave_id = "s2".into();
        assert_eq!(other.verify("POST", "/slave/hashlist", &hash), bad);
        let mut other = proof.clone();
        other.nonce = 43;
        assert_eq!(other.verify("POST", "/slave/hashlist", &hash), bad);
        // Another slave's key named with our signature.
        let mut other = proof.clone();
        other.key = SlaveKey::from_secret([8; 32]).public();
        assert_eq!(other.verify("POST", "/slave/hashlist", &hash), bad);
    }

    #[test]
    fn missing_and_malformed_headers_are_told_apart() {
        let none = |_: &str| -> Option<&[u8]> { None };
        assert_eq!(SlaveProof::from_headers(none), Err(ProofError::Missing));
        let key = SlaveKey::from_secret([1; 32]);
        let good = key.sign_request("POST", "/p", "s1", 1, b"");
        for i in 0..4 {
            let mut h = good.clone();
            h[i].1 = if i == 0 { "\u{1}" } else { "zz" }.into();
            assert!(
                matches!(
                    SlaveProof::from_headers(headers(&h)),
                    Err(ProofError::Malformed(_))
                ),
                "header {i}"
            );
        }
        for nonce in ["+5", "05", "", " 5"] {
            let mut h = good.clone();
            h[2].1 = nonce.into();
            assert!(SlaveProof::from_headers(headers(&h)).is_err(), "{nonce:?}");
        }
        let mut h = good;
        h[2].1 = "18446744073709551616".into();
        assert!(SlaveProof::from_headers(headers(&h)).is_err());
    }

    #[test]
    fn keys_round_trip_through_their_file_form() {
        let key = SlaveKey::from_secret([9; 32]);
        let text = key.to_hex();
        assert_eq!(text.len(), 64);
        let back = SlaveKey::from_hex(&format!("{text}\n")).unwrap();
        assert_eq!(back.public(), key.public());
        assert!(SlaveKey::from_hex("abc").is_none());
        assert!(SlaveKey::from_hex(&"g".repeat(64)).is_none());
        assert!(SlaveKey::from_hex(&"+f".repeat(32)).is_none());
        let p = key.public();
        assert_eq!(SlavePublicKey::from_hex(&p.to_hex()), Some(p));
        assert_eq!(p.fingerprint().len(), 16);
        assert!(!format!("{key:?}").contains(&text));
    }
}
