//! Revision index files `DATA/revisions/N.idx` and the in-memory [`LoadedRevision`].
//!
//! A build writes the encoded index to a temp file, fsyncs it, renames it to `N.idx` and fsyncs
//! the folder before the revision row is committed, so a committed revision always has its file.
//! A file without a row (a crash between the two steps) is simply overwritten by the next build.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use hummel_core::Index;
use hummel_core::index::decode;

use crate::db::RevisionRow;
use crate::error::MasterError;

/// A revision decoded in memory with its encoded bytes (served as is for the whole tree).
#[derive(Debug)]
pub(crate) struct LoadedRevision {
    pub row: RevisionRow,
    pub index: Arc<Index>,
    pub encoded: Bytes,
}

/// `DIR/N.idx`.
pub(crate) fn index_path(dir: &Path, revision: u64) -> PathBuf {
    dir.join(format!("{revision}.idx"))
}

/// Writes `bytes` as `DIR/N.idx` durably (temp, fsync, rename, fsync folder).
pub(crate) fn write_index_file(dir: &Path, revision: u64, bytes: &[u8]) -> Result<(), MasterError> {
    let final_path = index_path(dir, revision);
    let tmp = dir.join(format!("{revision}.idx.tmp"));
    let result = (|| {
        let mut f = File::create(&tmp).map_err(MasterError::io(&tmp))?;
        f.write_all(bytes).map_err(MasterError::io(&tmp))?;
        f.sync_all().map_err(MasterError::io(&tmp))?;
        drop(f);
        fs::rename(&tmp, &final_path).map_err(MasterError::io(&final_path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(MasterError::io(dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Deletes `DIR/N.idx` of a revision the garbage collection expired; `Ok(false)` if it was
/// gone already.
pub(crate) fn remove_index_file(dir: &Path, revision: u64) -> Result<bool, MasterError> {
    let path = index_path(dir, revision);
    match fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(MasterError::io(&path)(e)),
    }
}

/// Removes leftover `*.tmp` files.
pub(crate) fn clean_temp_files(dir: &Path) -> Result<(), MasterError> {
    for e in fs::read_dir(dir).map_err(MasterError::io(dir))?.flatten() {
        if e.file_name().to_string_lossy().ends_with(".tmp") {
            let _ = fs::remove_file(e.path());
        }
    }
    Ok(())
}

/// Reads `DIR/N.idx` without decoding it.
pub(crate) fn read_index_bytes(dir: &Path, revision: u64) -> Result<Bytes, MasterError> {
    let path = index_path(dir, revision);
    fs::read(&path)
        .map(Bytes::from)
        .map_err(|e| MasterError::RevisionIndex {
            revision,
            path,
            reason: e.to_string(),
        })
}

/// Reads and decodes (validating) the index of `row`. CPU-bound.
pub(crate) fn load_revision(dir: &Path, row: RevisionRow) -> Result<LoadedRevision, MasterError> {
    let encoded = read_index_bytes(dir, row.number)?;
    let bad = |reason: String| MasterError::RevisionIndex {
        revision: row.number,
        path: index_path(dir, row.number),
        reason,
    };
    let (index, body_hash) = decode(&encoded).map_err(|e| bad(e.to_string()))?;
    if index.revision != row.number {
        return Err(bad(format!("file holds revision {}", index.revision)));
    }
    if body_hash != row.index_hash {
        return Err(bad("content does not match the recorded index hash".into()));
    }
    Ok(LoadedRevision {
        row,
        index: Arc::new(index),
        encoded,
    })
}

/// BLAKE3 of the body of an encoded index: the identity [`decode`] also returns.
pub(crate) fn body_hash(encoded: &[u8]) -> Option<hummel_core::Hash> {
    let len_bytes: [u8; 8] = encoded.get(16..24)?.try_into().ok()?;
    let len = usize::try_from(u64::from_le_bytes(len_bytes)).ok()?;
    let body = encoded.get(24..24usize.checked_add(len)?)?;
    Some(hummel_core::Hash::of(body))
}
