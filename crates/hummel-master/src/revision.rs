//! Revision index files `DATA/revisions/N.idx` and the in-memory [`LoadedRevision`].
//!
//! A build writes the encoded index to a temp file, fsyncs it, renames it to `N.idx` and fsyncs
//! the folder before the revision row is committed, so a committed revision always has its file.
//! A file without a row (a crash between the two steps) is simply overwritten by the next build.
//!
//! Revision numbers come from [`next_number`]: never below the build's UTC time written as the
//! digits `YYYYMMDDhhmmss`, so a master whose data folder was restored from an older backup
//! does not publish again under numbers that clients already hold for other trees.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use hummel_core::Index;
use hummel_core::index::decode;
use hummel_core::tree::TreeHashes;

use crate::db::RevisionRow;
use crate::error::MasterError;

/// The number of the next revision, published at `now_unix` after `highest` (the highest number
/// this master ever published): the larger of `highest + 1` and [`time_number`]`(now_unix)`.
///
/// Time-derived, so that numbers are not reused when the data folder is restored from a backup
/// (its history ends earlier, the clock does not); still strictly increasing when builds follow
/// each other within a second or the clock goes backwards. The one weakness: a restored backup
/// together with a clock set back past the time of the backup.
pub(crate) fn next_number(highest: Option<u64>, now_unix: i64) -> u64 {
    let after = highest.map_or(1, |h| h.saturating_add(1));
    after.max(time_number(now_unix))
}

/// `now_unix` as the decimal digits of its UTC time `YYYYMMDDhhmmss` (`20261202014530`); 0
/// before year 0.
pub(crate) fn time_number(now_unix: i64) -> u64 {
    let t = crate::utc(now_unix);
    let digits = ((((t.year * 100 + t.month) * 100 + t.day) * 100 + t.hour) * 100 + t.minute) * 100
        + t.second;
    u64::try_from(digits).unwrap_or(0)
}

/// A revision decoded in memory with its encoded bytes (served as is for the whole tree) and
/// its directory digests (what is signed, and the proofs of its subtrees).
#[derive(Debug)]
pub(crate) struct LoadedRevision {
    pub row: RevisionRow,
    pub index: Arc<Index>,
    pub encoded: Bytes,
    pub tree: Arc<TreeHashes>,
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
        tree: Arc::new(TreeHashes::compute(&index)),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-02 01:45:30 UTC.
    const T: i64 = 1_796_175_930;

    #[test]
    fn numbers_are_the_utc_time_as_digits() {
        assert_eq!(time_number(T), 20_261_202_014_530);
        assert_eq!(time_number(0), 19_700_101_000_000);
        assert_eq!(next_number(None, T), 20_261_202_014_530);
        // Seconds after a previous revision: the time wins.
        assert_eq!(next_number(Some(20_261_202_014_500), T), 20_261_202_014_530);
        // A master whose revisions were numbered 1, 2, 3 jumps to the time.
        assert_eq!(next_number(Some(3), T), 20_261_202_014_530);
    }

    #[test]
    fn numbers_increase_with_several_builds_in_one_second() {
        let first = next_number(None, T);
        let second = next_number(Some(first), T);
        let third = next_number(Some(second), T);
        assert!(first < second && second < third, "{first} {second} {third}");
        assert_eq!(third, first + 2);
        // A second later the time catches up again only when it passed the numbers given.
        assert_eq!(next_number(Some(third), T + 1), third + 1);
        assert_eq!(next_number(Some(third), T + 3), time_number(T + 3));
    }

    #[test]
    fn numbers_increase_when_the_clock_goes_backwards() {
        let before = next_number(None, T);
        let after = next_number(Some(before), T - 86_400);
        assert_eq!(after, before + 1);
        // Monotonic over any sequence of clock readings.
        let mut highest = None;
        for t in [T, T + 5, T - 3600, T + 5, T + 5, T + 7, 0, T + 3600] {
            let n = next_number(highest, t);
            assert!(highest.is_none_or(|h| n > h), "{n} after {highest:?}");
            assert!(n >= time_number(t));
            highest = Some(n);
        }
    }

    #[test]
    fn a_restored_backup_does_not_reuse_a_number_it_never_saw() {
        // Published at T (the backup), then an hour later; the backup comes back the next day.
        let backed_up = next_number(None, T);
        let lost = next_number(Some(backed_up), T + 3600);
        let after_restore = next_number(Some(backed_up), T + 86_400);
        assert!(after_restore > lost);
    }
}
