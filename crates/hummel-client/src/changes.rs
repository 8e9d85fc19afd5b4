//! What changed between two revisions: [`changes`] (from `hummel_core::changes`, re-exported)
//! diffs two indexes (the one a folder holds and a newer one, or any two revisions of a
//! repository) into a [`Changelog`] of mods (top-level entries) and files added, updated and
//! removed. [`held`] reads what a folder
//! holds (its `.hummel/state` and `.hummel/index`), and [`current`] takes the master's current
//! revision and its whole index, so a caller can say what a sync would bring.
//!
//! Paths are the repository's: an index of a subtree (`root` = `@ace`) lists `@ace/...`, so
//! changelogs of several subtrees of one repository can be put side by side.

use std::path::Path;
use std::sync::Arc;

use hummel_core::Index;
pub use hummel_core::changes::{
    Change, ChangeSummary, Changelog, FileChange, ModChange, changes, same_tree,
};
use hummel_proto::api::RevisionInfo;
use hummel_tls::ClientTls;

use crate::SyncError;
use crate::http::{HttpClient, MasterApi};
use crate::state::{ClientState, StateDir};

/// What a folder holds: the state and index its last sync saved in `.hummel/`.
#[derive(Clone, Debug)]
pub struct Held {
    /// `.hummel/state`: master, subtree, revision and its identity.
    pub state: ClientState,
    /// `.hummel/index`: the index of that revision (of the subtree synced).
    pub index: Index,
}

/// What `dest` holds, if a completed sync left a usable state and the index of the same
/// revision there (an unreadable one counts as nothing held, as a sync treats it). Blocking:
/// reads and decodes the index.
pub fn held(dest: &Path) -> Option<Held> {
    let dir = StateDir::new(dest);
    let state = dir.load_state()?;
    let index = dir.read_index()?;
    (index.revision == state.revision).then_some(Held { state, index })
}

/// The master's current revision with its whole index.
#[derive(Clone, Debug)]
pub struct Current {
    /// `GET /api/v1/revision`.
    pub info: RevisionInfo,
    /// The whole index of that revision, decoded, validated and checked to be the one the
    /// master named (repository id and index hash).
    pub index: Index,
}

/// Fetches the master's current revision and its whole index, as a sync takes it
/// (`trusted::fetch_index`). When `known` is that revision (same repository and index hash), it
/// is returned as it is and no index is fetched.
pub async fn current(
    master_url: &str,
    read_token: Option<&str>,
    tls: &ClientTls,
    known: Option<Arc<Current>>,
) -> Result<Arc<Current>, SyncError> {
    let http = HttpClient::new(read_token, tls)?;
    let master = MasterApi::new(http, master_url)?;
    // Checked as a sync checks it: a valid signed statement, an index that is the signed tree.
    // The key is taken as the master names it (the page only shows it; each sync into a mod
    // folder checks it against the key that folder pinned).
    let offer = crate::trusted::offer(&master, None, None).await?;
    let info = offer.info.clone();
    if let Some(k) = known.filter(|k| {
        k.info.index_hash.is_some()
            && k.info.index_hash == info.index_hash
            && k.info.repository_id == info.repository_id
            && k.info.revision == info.revision
    }) {
        return Ok(k);
    }
    let fetched = crate::trusted::fetch_index(&master, &offer, None, None, None, None).await?;
    Ok(Arc::new(Current {
        info,
        index: fetched.index,
    }))
}
