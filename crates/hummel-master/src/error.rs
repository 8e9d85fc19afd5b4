//! [`MasterError`]: why opening or running the master failed, with the path or object involved.

use std::io;
use std::path::PathBuf;

use hummel_store::StoreError;

/// An error of the master library.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// A filesystem operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The metadata database failed.
    #[error("metadata database {path}: {source}")]
    Db {
        /// The database file.
        path: PathBuf,
        /// The error.
        source: rusqlite::Error,
    },
    /// The database was written by a newer Hummel.
    #[error(
        "metadata database {path} has schema version {found}; this build supports up to {supported}"
    )]
    SchemaVersion {
        /// The database file.
        path: PathBuf,
        /// Its `user_version`.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// The pack store failed.
    #[error("pack store: {0}")]
    Store(#[from] StoreError),
    /// A committed revision's index file is missing or does not decode.
    #[error("revision {revision}: index file {path}: {reason}")]
    RevisionIndex {
        /// The revision.
        revision: u64,
        /// Its `.idx` file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The build thread could not be started.
    #[error("could not start the build thread: {0}")]
    Spawn(io::Error),
    /// `--watch` could not watch the repository folder (say, too few inotify watches).
    #[error("cannot watch the repository folder {0}")]
    Watch(String),
    /// The signing key (or its rotations file) in the data folder is unusable.
    #[error("signing key {path}: {reason}")]
    SigningKey {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `repack_level` is neither 0 nor in [`crate::config::REPACK_LEVELS`].
    #[error("repack level {0} is out of range (0 = off, or 4..=19)")]
    RepackLevel(i32),
}

impl MasterError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> MasterError {
        let path = path.into();
        move |source| MasterError::Io { path, source }
    }
}
