//! Slave identities: no slave can speak for another.
//!
//! The slave token admits "one of our slaves"; it does not say which, and slave ids are public
//! (`/api/v1/locate` lists them). So each slave holds an Ed25519 key of its own
//! (`DATA/slave-key`) and signs every request to the master ([`hummel_proto::identity`]):
//!
//! - **Verified before use.** [`Signed`] reads the body (bounded by its route) and checks the
//!   signature over method, path, slave id, nonce and the body's hash, before the body is
//!   parsed; the body must name the id the request is signed for. No identity headers: 401
//!   `slave_signature_missing`; a signature that does not verify: 403
//!   `slave_signature_invalid`. The slave token is checked first, as before.
//! - **Enrolled once, then required.** The first signed hashlist of an id enrolls its key
//!   (`slave_identities`, schema 7; [`Master::admit_slave`]). Afterwards every hashlist and
//!   heartbeat of that id must be signed by that key; another key is refused with 403
//!   `slave_identity_mismatch` and changes nothing: not the URL, not the claims, not the
//!   liveness. A heartbeat of an id with no key enrolled is 404 `unknown_slave`, which makes
//!   the slave announce (and enroll) with its hashlist. A slave from before identities has no
//!   key enrolled: its next signed hashlist enrolls it.
//! - **No replays.** Each request's nonce must be above the highest the master recorded for
//!   that slave (in the database, so across restarts too); otherwise 409 `slave_nonce_stale`,
//!   with the highest in the answer's `X-Hummel-Slave-Nonce`, and the slave signs again above
//!   it.
//! - **Only the admin re-enrolls.** `DELETE /api/v1/slaves/{id}` (write token; `hummel
//!   remove-slave ID`) forgets the slave, its claims and its key ([`Master::remove_slave`]); the
//!   next hashlist of that id enrolls whatever key signs it. For a slave whose data folder (and
//!   key) was lost, or one that was replaced.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use axum::extract::{FromRequest, Request};
use hummel_core::Hash;
use hummel_proto::api::{Heartbeat, SlaveHashlist};
use hummel_proto::identity::{ProofError, SlaveProof, SlavePublicKey};
use serde::de::DeserializeOwned;

use crate::api::{ApiError, Bounded, blocking, parse_json, read_body};
use crate::error::MasterError;
use crate::master::Master;
use crate::{lock, now_ms};

/// Bodies hashed on a blocking thread beyond this size (a complete hashlist).
const HASH_INLINE_MAX: usize = 256 << 10;

/// A slave's enrolled key.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Enrolled {
    pub key: SlavePublicKey,
    pub enrolled_ms: u64,
    /// The highest nonce accepted from it.
    pub nonce: u64,
}

/// Every enrolled key, by slave id, mirrored from the database (`crate::fleet`; never locked
/// across a database commit: the slave's ordering stripe keeps its requests in order).
#[derive(Debug, Default)]
pub(crate) struct Identities {
    pub by_id: HashMap<String, Enrolled>,
}

impl Identities {
    /// From the database's rows.
    pub(crate) fn load(rows: Vec<crate::db::IdentityRow>) -> Identities {
        Identities {
            by_id: rows
                .into_iter()
                .map(|(id, key, enrolled_ms, nonce)| {
                    (
                        id,
                        Enrolled {
                            key: SlavePublicKey(key),
                            enrolled_ms,
                            nonce,
                        },
                    )
                })
                .collect(),
        }
    }
}

/// Why a signed request was not admitted.
#[derive(Debug)]
pub(crate) enum Admission {
    /// A heartbeat of an id with no enrolled key: the slave must announce its hashlist.
    Unknown,
    /// The id is enrolled with another key (its fingerprint).
    Mismatch {
        enrolled: String,
    },
    /// The nonce is not above the highest accepted.
    Stale {
        highest: u64,
    },
    Internal(MasterError),
}

impl From<Admission> for ApiError {
    fn from(a: Admission) -> ApiError {
        match a {
            Admission::Unknown => ApiError::NotFound {
                code: "unknown_slave",
                message: "unknown slave; announce with POST /slave/hashlist".into(),
            },
            Admission::Mismatch { enrolled } => ApiError::Refused {
                status: axum::http::StatusCode::FORBIDDEN,
                code: "slave_identity_mismatch",
                message: format!(
                    "this slave id is enrolled with another key (fingerprint {enrolled}); \
                     only the admin can remove it (hummel remove-slave, write token) so that \
                     another key may enroll it"
                ),
                retry_after: None,
            },
            Admission::Stale { highest } => ApiError::StaleNonce(highest),
            Admission::Internal(e) => e.into(),
        }
    }
}

/// A request body a slave signs: it names the slave.
pub(crate) trait SlaveBody {
    fn slave_id(&self) -> &str;
}

impl SlaveBody for SlaveHashlist {
    fn slave_id(&self) -> &str {
        &self.slave_id
    }
}

impl SlaveBody for Heartbeat {
    fn slave_id(&self) -> &str {
        &self.slave_id
    }
}

/// A JSON body whose signature verified, and the proof (id, key, nonce) it came with. Not yet
/// admitted: [`Master::admit_slave`] checks the key against the enrolled one and the nonce.
pub(crate) struct Signed<T> {
    pub body: T,
    pub proof: SlaveProof,
}

fn proof_refused(e: ProofError) -> ApiError {
    let (status, code) = match e {
        ProofError::Missing => (
            axum::http::StatusCode::UNAUTHORIZED,
            "slave_signature_missing",
        ),
        ProofError::Malformed(_) => return ApiError::BadRequest(e.to_string()),
        ProofError::BadSignature => (axum::http::StatusCode::FORBIDDEN, "slave_signature_invalid"),
    };
    ApiError::Refused {
        status,
        code,
        message: e.to_string(),
        retry_after: None,
    }
}

impl<T> FromRequest<Master> for Signed<T>
where
    T: DeserializeOwned + Bounded + SlaveBody + Send + 'static,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, master: &Master) -> Result<Self, Self::Rejection> {
        let proof = SlaveProof::from_headers(|name| req.headers().get(name).map(|v| v.as_bytes()))
            .map_err(proof_refused)?;
        // Stored as SQLite integers.
        if i64::try_from(proof.nonce).is_err() {
            return Err(ApiError::BadRequest("slave nonce out of range".into()));
        }
        let method = req.method().as_str().to_string();
        let path = req.uri().path().to_string();
        let limit = T::limit(master);
        let bytes = read_body(req, master, limit).await?;
        let check = {
            let proof = proof.clone();
            move |bytes: axum::body::Bytes| {
                let verdict = proof.verify(&method, &path, &Hash::of(&bytes));
                (bytes, verdict)
            }
        };
        let (bytes, verdict) = if bytes.len() > HASH_INLINE_MAX {
            blocking(move || check(bytes)).await?
        } else {
            check(bytes)
        };
        if let Err(e) = verdict {
            master
                .inner
                .metrics
                .slave_signatures_refused
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(slave = %proof.slave_id, key = %proof.key.fingerprint(),
                "refused a slave request: {e}");
            return Err(proof_refused(e));
        }
        let body: T = parse_json(bytes, limit).await?;
        if body.slave_id() != proof.slave_id {
            return Err(ApiError::BadRequest(
                "the body's slave_id is not the slave the request is signed for".into(),
            ));
        }
        Ok(Signed { body, proof })
    }
}

impl Master {
    /// Admits a request whose signature verified: its key must be the one enrolled for its id
    /// and its nonce above the highest accepted. An id with no key is enrolled with this one
    /// when `enroll` (a hashlist), and otherwise [`Admission::Unknown`]. The nonce is recorded
    /// (database first, under the slave's ordering stripe, with no other lock). Blocking.
    pub(crate) fn admit_slave(&self, proof: &SlaveProof, enroll: bool) -> Result<(), Admission> {
        let fleet = &self.inner.fleet;
        let _order = fleet.order(&proof.slave_id);
        let ids = lock(&fleet.identities);
        let (enrolled_ms, fresh) = match ids.by_id.get(&proof.slave_id) {
            Some(e) if e.key != proof.key => {
                self.inner
                    .metrics
                    .slave_identity_mismatches
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(slave = %proof.slave_id, enrolled = %e.key.fingerprint(),
                    presented = %proof.key.fingerprint(),
                    "refused a request signed by another key than the slave's enrolled one");
                return Err(Admission::Mismatch {
                    enrolled: e.key.fingerprint(),
                });
            }
            Some(e) if proof.nonce <= e.nonce => {
                return Err(Admission::Stale { highest: e.nonce });
            }
            Some(e) => (e.enrolled_ms, false),
            None if !enroll => return Err(Admission::Unknown),
            None => (now_ms(), true),
        };
        drop(ids);
        lock(&self.inner.db)
            .record_slave_identity(&proof.slave_id, &proof.key.0, enrolled_ms, proof.nonce)
            .map_err(Admission::Internal)?;
        lock(&fleet.identities).by_id.insert(
            proof.slave_id.clone(),
            Enrolled {
                key: proof.key,
                enrolled_ms,
                nonce: proof.nonce,
            },
        );
        if fresh {
            tracing::info!(slave = %proof.slave_id, key = %proof.key.fingerprint(),
                "enrolled the slave's key");
        }
        Ok(())
    }

    /// The fingerprint of slave `id`'s enrolled key, if any.
    pub(crate) fn slave_key_fingerprint(&self, id: &str) -> Option<String> {
        lock(&self.inner.fleet.identities)
            .by_id
            .get(id)
            .map(|e| e.key.fingerprint())
    }

    /// `DELETE /api/v1/slaves/{id}`: forgets slave `id` (its row, claims, key and probe
    /// results), so that another key may enroll the id. A slave still running announces again
    /// and enrolls with its own key. Returns whether the slave was known. Blocking.
    pub(crate) fn remove_slave(&self, id: &str) -> Result<bool, MasterError> {
        let fleet = &self.inner.fleet;
        // The database first, under the slave's stripe only; then memory.
        let _order = fleet.order(id);
        let known = lock(&self.inner.db).remove_slave(id)?;
        let known = {
            let mut tracker = lock(&fleet.tracker);
            tracker.observed.remove(id);
            known | tracker.slaves.remove(id).is_some()
        };
        let known = known | lock(&fleet.identities).by_id.remove(id).is_some();
        fleet.probes.forget(id);
        fleet.placement_changed();
        self.ui_changed();
        if known {
            tracing::info!(slave = %id, "removed the slave (admin)");
        }
        Ok(known)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enrolled_keys_load_from_rows() {
        let ids = Identities::load(vec![("s1".into(), [3; 32], 5, 9)]);
        let e = ids.by_id["s1"];
        assert_eq!(e.key, SlavePublicKey([3; 32]));
        assert_eq!((e.enrolled_ms, e.nonce), (5, 9));
    }
}
