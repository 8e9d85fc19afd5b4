//! The one place a client takes what the master says, for `sync` and `verify` alike:
//!
//! 1. [`offer`]: `GET /api/v1/revision` and the master's signed statement in it, checked:
//!    a valid signature under the key DEST trusts (pinned before, given with `--trust`, or
//!    pinned now on first contact; an old pinned key is followed through the published key
//!    rotations), not expired, of the revision offered. [`offer_revision`] asks for a revision
//!    DEST is pinned to (`?revision=N`), whose statement may be a pinned one
//!    (`Statement::decode_pinned`); only then is such a statement taken.
//! 2. [`fetch_index`]: the index of that revision (whole, a subtree, or rebuilt from a delta on
//!    the held index), decoded and validated, then checked against the statement's tree
//!    digest (in the tree format the statement names) through the answer's subtree proof.
//!    For a [`Selection`] (several folders, or an admin's set of them, into one DEST) it is
//!    the whole index, checked, then cut to the selected folders ([`Index::select`]; a set's
//!    folders are those of the signed info section). Nothing else in the client looks at an
//!    index from the network, and nothing is written to DEST before it passed.
//!
//! A master that does not sign (one from before signed revisions) is refused: every master
//! signs since, so only an impostor or an outdated master is turned away.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use hummel_core::statement::{MAX_ROTATIONS, MAX_STATEMENT, PublicKey, Rotation, Statement};
use hummel_core::tree::{self, MAX_PROOF, SubtreeProof};
use hummel_core::{Index, RelPath};
use hummel_proto::api::RevisionInfo;

use crate::SyncError;
use crate::error::blocking;
use crate::http::{IndexAnswer, MasterApi};

/// How the key that signed the offered revision came to be trusted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyTrust {
    /// The key DEST pinned before.
    #[default]
    Pinned,
    /// Given with `--trust`.
    Given,
    /// Pinned now, on first contact: nothing vouched for it but the master itself.
    FirstContact,
    /// Reached from the pinned key through the master's published key rotations.
    Rotated,
}

/// The revision the master offers, as its trusted statement says.
#[derive(Clone, Debug)]
pub(crate) struct Offer {
    /// The master's answer (its unsigned fields are informative only).
    pub info: RevisionInfo,
    /// What the trusted key signed.
    pub statement: Statement,
    /// How the key came to be trusted.
    pub trust: KeyTrust,
}

impl Offer {
    /// The revision number (signed).
    pub(crate) fn revision(&self) -> u64 {
        self.statement.revision
    }

    /// The signing key, now to be pinned.
    pub(crate) fn key(&self) -> PublicKey {
        self.statement.key
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `GET /api/v1/revision` with its statement verified: signed by `given` when given, else by
/// `pinned` (or a key it rotated to) when DEST pinned one, else by whatever key the master
/// names (first contact); not expired; of the revision offered.
pub(crate) async fn offer(
    master: &MasterApi,
    pinned: Option<PublicKey>,
    given: Option<PublicKey>,
) -> Result<Offer, SyncError> {
    offer_revision(master, pinned, given, None).await
}

/// [`offer`] of revision `want` when given (a pin): the master's answer must be that revision,
/// and its statement may be a pinned one.
pub(crate) async fn offer_revision(
    master: &MasterApi,
    pinned: Option<PublicKey>,
    given: Option<PublicKey>,
    want: Option<u64>,
) -> Result<Offer, SyncError> {
    let info = match want {
        None => master.revision().await?,
        // A revision the master no longer has is refused by it (404 `no_such_revision`).
        Some(n) => master.revision_at(n).await?,
    };
    let refuse = |reason: String| SyncError::Untrusted {
        url: master.base().to_string(),
        reason,
    };
    let offered = info.revision.ok_or_else(|| SyncError::NoRevision {
        url: master.base().to_string(),
    })?;
    if let Some(n) = want
        && offered != n
    {
        return Err(refuse(format!(
            "asked for revision {n}, the master offers revision {offered}"
        )));
    }
    let Some(hex) = info.statement.as_deref() else {
        return Err(refuse(format!(
            "revision {offered} is not signed (a master from before signed revisions, or \
             not a Hummel master); update the master"
        )));
    };
    let statement = tree::from_hex(hex, MAX_STATEMENT)
        .ok_or_else(|| {
            refuse(format!(
                "the signed statement of revision {offered} is not hex or longer than \
                 {MAX_STATEMENT} bytes"
            ))
        })
        .and_then(|b| {
            let decoded = if want.is_some() {
                Statement::decode_pinned(&b)
            } else {
                Statement::decode(&b)
            };
            decoded.map_err(|e| refuse(format!("revision {offered}: {e}")))
        })?;
    let key = statement.key;
    // The key to start from: the one given, else the one pinned; none on first contact.
    let trust = match given.or(pinned) {
        None => KeyTrust::FirstContact,
        Some(anchor) if anchor == key => {
            if given.is_some() && given != pinned {
                KeyTrust::Given
            } else {
                KeyTrust::Pinned
            }
        }
        Some(anchor) => {
            // An old key hands over to a new one by signing a rotation.
            let rotations: Vec<Rotation> = info
                .key_rotations
                .iter()
                .take(4 * MAX_ROTATIONS)
                .filter_map(|h| Rotation::decode(&tree::from_hex(h, MAX_STATEMENT)?).ok())
                .collect();
            let path = hummel_core::statement::rotation_path(
                anchor,
                key,
                &statement.repository_id,
                &rotations,
            );
            match path {
                Some(path) => {
                    tracing::info!(
                        from = %anchor,
                        to = %key,
                        steps = path.len(),
                        "following the master's key rotation"
                    );
                    KeyTrust::Rotated
                }
                None if given.is_some() => {
                    return Err(refuse(format!(
                        "revision {offered} is signed by the key {key}, not by the one given \
                         with --trust ({anchor}) nor by one it handed over to"
                    )));
                }
                None => {
                    return Err(refuse(format!(
                        "revision {offered} is signed by another key ({key}) than the one this \
                         folder pinned ({anchor}), and no key rotation from it is published; if \
                         the master's key really changed, sync with --trust {key}"
                    )));
                }
            }
        }
    };
    if statement.revision != offered {
        return Err(refuse(format!(
            "the master offers revision {offered} with the signed statement of revision {}",
            statement.revision
        )));
    }
    if let Some(id) = &info.repository_id
        && *id != statement.repository_id
    {
        return Err(refuse(format!(
            "the master names repository {id}, its signed statement {}",
            statement.repository_id
        )));
    }
    let now = now_unix();
    if statement.expired(now) {
        return Err(refuse(format!(
            "the signed statement of revision {offered} expired {} s ago (signed {} s ago): \
             the master stopped signing, or this is a replay of an old answer",
            now - statement.expires_unix,
            now - statement.signed_unix
        )));
    }
    Ok(Offer {
        info,
        statement,
        trust,
    })
}

/// Several folders of the repository synced into one DEST, each at its repository path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// These folders (`--path A --path B`).
    Paths(Vec<RelPath>),
    /// The admin's set of this name (`--set NAME`): its folders as the revision's signed info
    /// section lists them.
    Set(String),
}

impl Selection {
    /// What the state records as its subtree: it starts with `/`, which no subtree does, so
    /// a selection is never taken for a subtree or another selection.
    pub fn key(&self) -> String {
        match self {
            Selection::Paths(p) => {
                let mut names: Vec<&str> = p.iter().map(RelPath::as_str).collect();
                names.sort_unstable();
                format!("/paths:{}", names.join("\n"))
            }
            Selection::Set(name) => format!("/set:{name}"),
        }
    }

    /// The folders of this selection in `index` (a whole revision, verified).
    pub fn folders(&self, index: &Index) -> Result<Vec<RelPath>, SyncError> {
        match self {
            Selection::Paths(p) => Ok(p.clone()),
            Selection::Set(name) => match index.info.set(name) {
                Some(set) => Ok(set.mods.clone()),
                None => {
                    let names: Vec<&str> =
                        index.info.sets.iter().map(|s| s.name.as_str()).collect();
                    Err(SyncError::Options(if names.is_empty() {
                        format!("the repository defines no sets (asked for set {name:?})")
                    } else {
                        format!(
                            "the repository has no set {name:?} (it has: {})",
                            names.join(", ")
                        )
                    }))
                }
            },
        }
    }
}

/// `index` (whole, verified) cut to the folders of `selection`. CPU-bound.
pub(crate) fn select(index: &Index, selection: &Selection) -> Result<Index, SyncError> {
    let folders = selection.folders(index)?;
    index.select(&folders).map_err(|missing| {
        SyncError::Options(format!(
            "revision {} has no folder {missing}",
            index.revision
        ))
    })
}

/// What [`fetch_index`] received.
pub(crate) struct Received {
    /// The answer was a delta (and rebuilt).
    pub delta: bool,
    /// Bytes received in all.
    pub bytes: u64,
}

/// An index [`fetch_index`] took from the master, verified.
pub(crate) struct Fetched {
    pub received: Received,
    /// Its encoded form, to keep.
    pub encoded: NewIndex,
    pub index: Index,
    /// What the base had that the index lacks (a delta's rebuild takes the base apart).
    pub replaced: Option<Index>,
}

/// The new index's encoded form until it waits on disk as `index.next`.
pub(crate) enum NewIndex {
    /// The held index is this revision: nothing to keep.
    Held,
    /// Written as `index.next`.
    Staged,
    /// The master's bytes (a whole index).
    Bytes(Vec<u8>),
    /// Rebuilt from a delta: encoded from the index when staged.
    Rebuilt,
}

/// The index of the offered revision below `path`: fetched (a delta from `since` when given,
/// rebuilt on `base`; a delta that does not rebuild, or rebuilds to another tree than the
/// signed one, is replaced by the whole index), decoded and validated, of that revision and
/// subtree, and leading through the answer's proof to the signed tree digest. With a
/// `selection` (and no `path`, no `since`), the whole index, verified, then cut to it; the
/// encoded form kept is then the cut index's.
pub(crate) async fn fetch_index(
    master: &MasterApi,
    offer: &Offer,
    path: Option<&RelPath>,
    since: Option<u64>,
    base: Option<Index>,
    selection: Option<&Selection>,
) -> Result<Fetched, SyncError> {
    if let Some(selection) = selection {
        debug_assert!(path.is_none() && since.is_none());
        let mut fetched = Box::pin(fetch_index(master, offer, None, None, base, None)).await?;
        let (whole, selection) = (fetched.index, selection.clone());
        fetched.index = blocking(move || select(&whole, &selection)).await?;
        fetched.encoded = NewIndex::Rebuilt;
        return Ok(fetched);
    }
    let revision = offer.revision();
    let answer = master.index(revision, path, since).await?;
    let mut received = answer.bytes.len() as u64;
    let delta = hummel_core::delta::is_delta(&answer.bytes);
    match take(master, offer, path, answer, base).await {
        Ok((encoded, index, replaced)) => Ok(Fetched {
            received: Received {
                delta,
                bytes: received,
            },
            encoded,
            index,
            replaced,
        }),
        Err(e) if delta => {
            // A delta from a base that is not the master's revision `since` (its data folder
            // was restored, say) does not rebuild, or not to the signed tree; the whole index
            // always does, if the master is honest.
            tracing::warn!("the index delta was refused ({e}); fetching the whole index");
            let whole = master.index(revision, path, None).await?;
            received += whole.bytes.len() as u64;
            let (encoded, index, replaced) = take(master, offer, path, whole, None).await?;
            Ok(Fetched {
                received: Received {
                    delta: false,
                    bytes: received,
                },
                encoded,
                index,
                replaced,
            })
        }
        Err(e) => Err(e),
    }
}

/// One answer of `GET /api/v1/index`, checked all the way to the signed tree digest.
async fn take(
    master: &MasterApi,
    offer: &Offer,
    path: Option<&RelPath>,
    mut answer: IndexAnswer,
    base: Option<Index>,
) -> Result<(NewIndex, Index, Option<Index>), SyncError> {
    let revision = offer.revision();
    let refuse = |reason: String| SyncError::Untrusted {
        url: master.base().to_string(),
        reason,
    };
    if let (Some(got), Some(want)) = (&answer.repository_id, &offer.info.repository_id)
        && got != want
    {
        return Err(SyncError::Index(format!(
            "the index is of repository {got}, the master named {want}"
        )));
    }
    if let (Some(got), Some(want)) = (answer.revision_hash, offer.info.index_hash)
        && got != want
    {
        return Err(SyncError::Index(format!(
            "revision {revision} changed while this sync read it (index {got}, announced \
             {want}); run the sync again"
        )));
    }
    let shown = path.map_or_else(|| "the whole tree".to_string(), |p| p.to_string());
    let proof: SubtreeProof = answer
        .proof
        .as_deref()
        .and_then(|h| tree::from_hex(h, MAX_PROOF))
        .ok_or_else(|| refuse(format!("the index of {shown} came without its proof")))
        .and_then(|b| tree::decode_proof(&b).map_err(|e| refuse(e.to_string())))?;
    let bytes = std::mem::take(&mut answer.bytes);
    let (path, signed, format) = (
        path.cloned(),
        offer.statement.tree_digest,
        offer.statement.tree_format,
    );
    let url = master.base().to_string();
    blocking(move || {
        let built = index_from_answer(bytes, base)?;
        let index = &built.1;
        if index.revision != revision || index.root != path {
            return Err(SyncError::Index(format!(
                "asked for revision {revision} of {shown}, got revision {} of {}",
                index.revision,
                index
                    .root
                    .as_ref()
                    .map_or_else(|| "the whole tree".to_string(), |p| p.to_string())
            )));
        }
        tree::verify_format(index, path.as_ref(), &proof, format, &signed).map_err(|e| {
            SyncError::Untrusted {
                url,
                reason: format!(
                    "revision {revision} of {shown} is not what the master signed: {e}"
                ),
            }
        })?;
        Ok(built)
    })
    .await
}

/// The index the master answered with: a whole index, or a delta rebuilt on `base` (the index
/// held, taken apart). Returns how to keep it, the index, and what `base` had that the index
/// lacks.
fn index_from_answer(
    bytes: Vec<u8>,
    base: Option<Index>,
) -> Result<(NewIndex, Index, Option<Index>), SyncError> {
    if hummel_core::delta::is_delta(&bytes) {
        let base = base
            .ok_or_else(|| SyncError::Index("the master sent a delta for no index held".into()))?;
        let delta = hummel_core::delta::decode_delta(&bytes)
            .map_err(|e| SyncError::Index(e.to_string()))?;
        let (index, replaced) = delta
            .apply_owned(base)
            .map_err(|e| SyncError::Index(e.to_string()))?;
        tracing::debug!(
            from = delta.base_revision,
            to = delta.revision,
            changed = delta.upserted.len(),
            removed = delta.removed.len(),
            bytes = bytes.len(),
            "rebuilt the index from a delta"
        );
        return Ok((NewIndex::Rebuilt, index, Some(replaced)));
    }
    let (index, _) =
        hummel_core::index::decode(&bytes).map_err(|e| SyncError::Index(e.to_string()))?;
    // A whole index although the base was held: keep only what the base loses (survey uses
    // it to find local data), not a second whole index.
    let replaced = base.map(|b| b.lost_to(&index));
    Ok((NewIndex::Bytes(bytes), index, replaced))
}
