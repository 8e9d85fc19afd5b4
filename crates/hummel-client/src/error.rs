//! [`SyncError`]: why a sync or verify failed, in one line, with the side that failed (master,
//! a pack and its slaves, or the local folder) and the thing it failed on. [`PushError`]: why
//! a push failed, likewise.

use std::path::{Path, PathBuf};

/// Why a sync or verify failed. `Display` is one line meant for the operator.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The master could not be reached or answered something unusable.
    #[error("master {url}: {reason}")]
    Master {
        /// Master base URL.
        url: String,
        /// What went wrong (connection refused, timed out, bad JSON ...).
        reason: String,
    },
    /// The master answered with an error status and an API error body.
    #[error("master {url}: {code}: {message} (HTTP {status})")]
    MasterRefused {
        /// Master base URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// The API error code, e.g. `no_such_path`.
        code: String,
        /// The master's message.
        message: String,
    },
    /// The master has not published any revision yet.
    #[error("master {url}: no revision has been published yet")]
    NoRevision {
        /// Master base URL.
        url: String,
    },
    /// The master's answer is not what the key DEST trusts signed (a missing or wrong
    /// signature, another key, an expired statement, an index that does not lead to the
    /// signed tree digest). Nothing was written.
    #[error("master {url}: refused: {reason}")]
    Untrusted {
        /// Master base URL.
        url: String,
        /// What does not hold, and what to do.
        reason: String,
    },
    /// The index was refused (undecodable, inconsistent, or not the one asked for).
    #[error("index: {0}")]
    Index(String),
    /// No live slave holds a pack the sync needs (a new revision still replicating), and the
    /// master does not serve it as the source of last resort either.
    #[error(
        "pack {pack} ({hash}) is still replicating to the mirrors ({}); retry in a minute",
        copies_of(0, *target)
    )]
    PackNotLocated {
        /// Pack number.
        pack: u32,
        /// Short pack hash.
        hash: String,
        /// Copies the master places (unknown with older masters).
        target: Option<u32>,
    },
    /// A pack still replicating is served only by the master, its source of last resort, which
    /// stayed busy with other downloads.
    #[error(
        "pack {pack} ({hash}) is still replicating to the mirrors ({}) and the master, which \
         serves it meanwhile, stayed busy; retry in a minute",
        copies_of(*copies, *target)
    )]
    PackReplicating {
        /// Pack number.
        pack: u32,
        /// Short pack hash.
        hash: String,
        /// Live mirrors holding it.
        copies: usize,
        /// Copies the master places (unknown with older masters).
        target: Option<u32>,
    },
    /// Every slave holding a pack failed or served bad data.
    #[error(
        "pack {pack} ({hash}): no slave could serve verified data ({tried} tried; last: {last})"
    )]
    PackUnavailable {
        /// Pack number.
        pack: u32,
        /// Short pack hash.
        hash: String,
        /// How many slaves were tried.
        tried: usize,
        /// The last failure.
        last: String,
        /// The slaves that failed or served bad data during the run (reported to the master,
        /// which has them probed).
        bad_slaves: Vec<String>,
    },
    /// A local file system operation failed.
    #[error("{op} {}: {source}", crate::platform::shown(path))]
    Local {
        /// What was being done (`create`, `write`, `rename` ...).
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Another program holds a file open (a running game), so it can be neither replaced nor
    /// deleted; the platform layer retried for a few seconds first. Files placed before it
    /// stay placed (each old or new); the next run finishes the job.
    #[error(
        "cannot {op} {}: another program has it open or locked (is Arma 3 running? close the \
         game, or whatever uses the file, and sync again): {source}",
        crate::platform::shown(path)
    )]
    InUse {
        /// `replace`, `delete` or `remove`.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS's word for it.
        source: std::io::Error,
    },
    /// The file system of DEST cannot hold some of the repository's names (Windows' reserved
    /// names, a trailing dot, names differing only in case ...). Nothing was written.
    #[error(
        "{}: this folder's file system cannot hold {total} of the repository's names, so \
         nothing was synced; ask the repository's admin to rename them: {}{}",
        crate::platform::shown(dest),
        names.join("; "),
        more_names(names.len(), *total)
    )]
    Unholdable {
        /// The destination.
        dest: PathBuf,
        /// The first names, each with why.
        names: Vec<String>,
        /// How many there are.
        total: usize,
    },
    /// A temp file is about to be sealed with chunks never written to it (a bug, not a
    /// network fault: every chunk is verified on its way in).
    #[error("{path}: {missing} of its chunks were never written")]
    Incomplete {
        /// Repository path.
        path: String,
        /// Chunks not written.
        missing: u32,
    },
    /// The file system holding DEST has too little free space for the temp files; nothing
    /// was written.
    #[error(
        "not enough space: needs {} free in {}, {} available",
        crate::space::human(*needed),
        path.display(),
        crate::space::human(*available)
    )]
    NoSpace {
        /// The destination.
        path: PathBuf,
        /// Bytes the sync needs free.
        needed: u64,
        /// Bytes free.
        available: u64,
    },
    /// Another sync holds the lock on the destination.
    #[error("{}: another hummel sync is running in this folder", path.display())]
    Busy {
        /// The destination.
        path: PathBuf,
    },
    /// The destination cannot be used.
    #[error("{}: {reason}", path.display())]
    Destination {
        /// The path at fault.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The master offers a revision older than the one DEST holds (a restored backup, a
    /// replayed answer). DEST was not touched.
    #[error(
        "refusing to go back: the master offers revision {offered}, older than revision {held} \
         that {} holds (was the master restored from a backup?); run again with \
         --allow-rollback to accept it",
        dest.display()
    )]
    Rollback {
        /// The destination.
        dest: PathBuf,
        /// The revision DEST holds.
        held: u64,
        /// The revision the master offers.
        offered: u64,
    },
    /// The revision would delete most of the files DEST holds and the admin did not confirm
    /// that. DEST was not touched.
    #[error(
        "refusing to delete {deleting} of the {holding} files {} holds: revision {revision} \
         removes most of them and the admin did not confirm a mass delete (an unmounted \
         repository?); check with --dry-run, then run again with --allow-mass-delete to apply it",
        dest.display()
    )]
    MassDelete {
        /// The destination.
        dest: PathBuf,
        /// Files the plan deletes.
        deleting: u64,
        /// Files DEST holds in the entries Hummel manages.
        holding: u64,
        /// The revision offered.
        revision: u64,
    },
    /// The options make no sense.
    #[error("invalid options: {0}")]
    Options(String),
    /// A worker task panicked or was cancelled (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

impl SyncError {
    /// A local I/O failure on `path` while doing `op`.
    pub(crate) fn local(op: &'static str, path: &Path, source: std::io::Error) -> SyncError {
        SyncError::Local {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// A blocking task that did not finish.
    pub(crate) fn join(e: tokio::task::JoinError) -> SyncError {
        SyncError::Internal(format!("worker task failed: {e}"))
    }

    /// True when the failure is on the network side (master or slaves), not local.
    pub fn is_network(&self) -> bool {
        matches!(
            self,
            SyncError::Master { .. }
                | SyncError::MasterRefused { .. }
                | SyncError::NoRevision { .. }
                | SyncError::PackNotLocated { .. }
                | SyncError::PackReplicating { .. }
                | SyncError::PackUnavailable { .. }
        )
    }
}

/// Why a push failed. `Display` is one line meant for the operator; a failure of the master
/// keeps hummel-net's [`hummel_net::NetError`] so the caller can word it (tokens,
/// certificates) as its other master calls.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The master could not be reached, refused a call, or answered something unusable.
    #[error("master {url}: {source}")]
    Master {
        /// Master base URL.
        url: String,
        /// The failed call.
        #[source]
        source: hummel_net::NetError,
    },
    /// The master's parameters cannot be used (a chunker or zstd level this build refuses).
    #[error("unusable push parameters: {reason}")]
    Parameters {
        /// Which and why.
        reason: String,
    },
    /// The folder to push is not a folder.
    #[error("{} is not a folder", path.display())]
    NotAFolder {
        /// As given.
        path: PathBuf,
    },
    /// A symlink or special file below the folder: a push holds folders and regular files.
    #[error(
        "{} is a symlink or special file; a push holds folders and regular files only",
        path.display()
    )]
    Unsupported {
        /// The entry.
        path: PathBuf,
    },
    /// A name the repository cannot hold (not UTF-8, or not a valid repository path).
    #[error("{path}: {reason}")]
    BadName {
        /// The path (relative where known).
        path: String,
        /// Why.
        reason: String,
    },
    /// A local file system operation failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Local {
        /// `list`, `stat`, `read` ...
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// An I/O failure not yet tied to a path (the push names the path before returning it).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A file's size or mtime after it was read is not what the walk saw (it was written to
    /// while pushed, which could publish it torn). Nothing was published.
    #[error("{} changed while it was pushed; push again", path.display())]
    Changed {
        /// The file.
        path: PathBuf,
    },
    /// The `HUMMEL_PUSH_STOP_AFTER_PACKS` test hook stopped the push after N packs.
    #[error("stopped after uploading {packs} packs (HUMMEL_PUSH_STOP_AFTER_PACKS)")]
    Stopped {
        /// Packs uploaded.
        packs: u64,
    },
    /// A test hook failed.
    #[error("{0}")]
    Hook(String),
    /// This part of the push stopped because another failed (never the error a push returns).
    #[error("the push stopped")]
    Cancelled,
    /// A worker panicked or was cancelled (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

impl PushError {
    /// A failed call to `api`'s master.
    pub(crate) fn master(api: &hummel_net::MasterApi, source: hummel_net::NetError) -> PushError {
        PushError::Master {
            url: api.base().to_string(),
            source,
        }
    }

    /// A local I/O failure on `path` while doing `op`.
    pub(crate) fn local(op: &'static str, path: &Path, source: std::io::Error) -> PushError {
        PushError::Local {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// `; and 3 more` when `total` names were found and `listed` are shown.
fn more_names(listed: usize, total: usize) -> String {
    if total > listed {
        format!("; and {} more", total - listed)
    } else {
        String::new()
    }
}

/// `1 of 2 copies`, or `1 copies so far` when the target is unknown.
fn copies_of(held: usize, target: Option<u32>) -> String {
    match target {
        Some(t) => format!("{held} of {t} copies"),
        None => format!("{held} copies so far"),
    }
}

/// Runs CPU or blocking file work off the async runtime.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, SyncError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, SyncError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(SyncError::join)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pack_still_replicating_says_when_to_retry() {
        let e = SyncError::PackNotLocated {
            pack: 12,
            hash: "abcd".into(),
            target: Some(2),
        };
        assert_eq!(
            e.to_string(),
            "pack 12 (abcd) is still replicating to the mirrors (0 of 2 copies); retry in a minute"
        );
        let e = SyncError::PackReplicating {
            pack: 12,
            hash: "abcd".into(),
            copies: 0,
            target: None,
        };
        assert!(
            e.to_string().contains("(0 copies so far) and the master"),
            "{e}"
        );
        assert!(e.is_network());
    }
}
