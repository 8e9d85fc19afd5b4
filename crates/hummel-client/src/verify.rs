//! [`verify`]: is DEST an exact copy of the master's current revision (as its trusted key
//! signed it, through `trusted`, like a sync)? Read-only: re-hashes
//! every file (in parallel) and reports missing, different and extra entries as problems.
//! The stat cache is not trusted here; `.hummel` is ignored.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use hummel_core::statement::PublicKey;
use hummel_core::{EntryKind, FileEntry, Index, RelPath};
use hummel_tls::ClientTls;

use crate::SyncError;
use crate::error::blocking;
use crate::http::{HttpClient, MasterApi};
use crate::scan::{self, LocalKind, LocalTree};
use crate::state::StateDir;
use crate::sync;
use crate::trusted;

/// What to verify against what.
#[derive(Clone)]
pub struct VerifyOptions {
    /// Master base URL.
    pub master_url: String,
    /// The folder to check.
    pub dest: PathBuf,
    /// Subtree it mirrors (`None`: the whole repository).
    pub path: Option<RelPath>,
    /// Instead of `path`: the folders (or set) it holds, each at its repository path.
    pub selection: Option<trusted::Selection>,
    /// Sent as `X-HUMMEL-TOKEN`.
    pub read_token: Option<String>,
    /// Whom an `https://` master must be certified by.
    pub tls: ClientTls,
    /// The master's signing key to trust (`--trust`); else the one DEST pinned, else the
    /// master's own on first contact (verify pins nothing).
    pub trust: Option<PublicKey>,
}

impl std::fmt::Debug for VerifyOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyOptions")
            .field("master_url", &self.master_url)
            .field("dest", &self.dest)
            .field("path", &self.path)
            .field("selection", &self.selection)
            .field(
                "read_token",
                &self.read_token.as_ref().map(|_| "<redacted>"),
            )
            .field("tls", &self.tls)
            .field("trust", &self.trust)
            .finish()
    }
}

/// The result of [`verify`]. DEST is identical iff `problems` is empty.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Revision checked against.
    pub revision: u64,
    /// Files hashed.
    pub files_checked: u64,
    /// Bytes hashed.
    pub bytes_checked: u64,
    /// One line per difference, sorted.
    pub problems: Vec<String>,
    /// The fingerprint of the master's signing key that signed the revision.
    #[serde(default)]
    pub signing_key: String,
    /// How that key came to be trusted (`first_contact`: nothing was pinned; verify pins
    /// nothing).
    #[serde(default)]
    pub signing_key_trust: crate::KeyTrust,
}

impl VerifyReport {
    /// True when DEST matches the revision exactly.
    pub fn is_identical(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks DEST against the master's current revision (of `opts.path`), or the revision DEST is
/// pinned to (`hummel sync --revision N`). Writes nothing.
pub async fn verify(opts: &VerifyOptions) -> Result<VerifyReport, SyncError> {
    let http = HttpClient::new(opts.read_token.as_deref(), &opts.tls)?;
    let master = MasterApi::new(http, &opts.master_url)?;
    let state_dir = StateDir::new(&opts.dest);
    let (state, held, pin) = blocking(move || {
        let state = state_dir.load_state();
        let index = state_dir.read_index();
        Ok((state, index, state_dir.load_pin()))
    })
    .await?;
    // What the master offers, as the key DEST trusts signed it (the same checks as a sync).
    let pinned = state.as_ref().and_then(|s| s.signing_key);
    let offer = trusted::offer_revision(&master, pinned, opts.trust, pin).await?;
    let revision = offer.revision();
    let wanted = |i: &Index| i.revision == revision && i.root == opts.path;

    // The held index when it is the very revision offered (same repository, number and
    // signed tree) and this subtree (saves a download), else the master's, checked.
    let key = match &opts.selection {
        Some(s) => Some(s.key()),
        None => opts.path.as_ref().map(|p| p.as_str().to_string()),
    };
    let holds_offered = state.as_ref().is_some_and(|s| {
        sync::same_repository(s, Some(&offer.statement.repository_id), master.base())
            && s.revision == revision
            && sync::same_content(s, &offer.statement)
            && s.subtree == key
    });
    let index = match held {
        Some(i) if holds_offered && wanted(&i) => i,
        _ => {
            trusted::fetch_index(
                &master,
                &offer,
                opts.path.as_ref(),
                None,
                None,
                opts.selection.as_ref(),
            )
            .await?
            .index
        }
    };
    let key = sync::KeyReport::of(&offer);
    // What Hummel manages in DEST: the revision's top-level names and those earlier syncs
    // placed; nothing else is looked at.
    let mut tops = sync::index_top_names(&index);
    tops.extend(state.into_iter().flat_map(|s| s.owned));
    let dest = crate::platform::long_path(&opts.dest);
    let mut report = blocking(move || {
        let tree = scan::walk(&dest, &tops, Default::default())?;
        Ok(compare(&dest, &index, &tree))
    })
    .await?;
    report.signing_key = key.fingerprint;
    report.signing_key_trust = key.trust;
    Ok(report)
}

/// Compares DEST (listed as `tree`) with `index`, hashing every file of the right size.
pub(crate) fn compare(dest: &Path, index: &Index, tree: &LocalTree) -> VerifyReport {
    let mut problems = Vec::new();
    let mut to_hash: Vec<(&RelPath, &FileEntry, u32)> = Vec::new();
    for e in &index.entries {
        let local = tree.get(e.path.as_str());
        match (&e.kind, local) {
            (EntryKind::Dir(_), Some(LocalKind::Dir { .. })) => {}
            (EntryKind::Dir(_), None) => problems.push(format!("missing directory {}", e.path)),
            (EntryKind::Dir(_), Some(k)) => problems.push(format!(
                "{}: expected a directory, found a {}",
                e.path,
                k.name()
            )),
            (EntryKind::File(f), Some(LocalKind::File(st))) => {
                if st.size != f.size {
                    problems.push(format!("{}: size {}, expected {}", e.path, st.size, f.size));
                } else {
                    to_hash.push((&e.path, f, st.mode));
                }
            }
            (EntryKind::File(_), None) => problems.push(format!("missing file {}", e.path)),
            (EntryKind::File(_), Some(k)) => {
                problems.push(format!("{}: expected a file, found a {}", e.path, k.name()))
            }
        }
    }
    let hashed: Vec<Option<String>> = to_hash
        .par_iter()
        .map(
            |(path, f, mode)| match scan::hash_file(&path.to_path(dest)) {
                Ok((h, _)) if h != f.hash => {
                    Some(format!("{path}: content differs from the index"))
                }
                Ok(_) if !crate::platform::mode_matches(*mode, f.mode) => Some(format!(
                    "{path}: mode {:o}, expected {:o}",
                    mode & 0o777,
                    f.mode & 0o777
                )),
                Ok(_) => None,
                Err(e) => Some(format!("{path}: cannot read: {e}")),
            },
        )
        .collect();
    problems.extend(hashed.into_iter().flatten());
    for (path, kind) in tree.iter() {
        let known = path
            .to_str()
            .and_then(|s| RelPath::new(s).ok())
            .is_some_and(|p| index.get(&p).is_some());
        if !known {
            problems.push(format!("extra {} {}", kind.name(), path.to_string_lossy()));
        }
    }
    problems.sort();
    VerifyReport {
        revision: index.revision,
        files_checked: to_hash.len() as u64,
        bytes_checked: to_hash.iter().map(|(_, f, _)| f.size).sum(),
        problems,
        ..VerifyReport::default()
    }
}
