//! Free space: before it downloads, a sync makes sure the file system holding DEST can take
//! what it will write into temp files, and refuses up front otherwise, with DEST untouched.
//!
//! The need is what the temp files still lack: the plan's bytes to write minus the verified
//! bytes resumed from an earlier run, plus a margin: one block per file written (a file
//! occupies whole blocks; 500,000 files of 1–4 KB take ~2 GB, not 1.25) and
//! [`SPACE_MARGIN`] for the state, the index and the file system's own bookkeeping. Old
//! versions of replaced files are freed only by the renames, after the temp files are
//! complete, so they count as occupied.

use std::path::Path;

use crate::SyncError;

/// Fixed headroom on top of the bytes to write.
pub const SPACE_MARGIN: u64 = 16 << 20;

/// Bytes counted per file for rounding up to whole blocks.
pub const BLOCK_ALLOWANCE: u64 = 4096;

/// Free bytes a sync needs in DEST: `bytes_to_write` of `files` temp files, of which
/// `bytes_resumed` are already there, plus the margins.
pub fn space_needed(bytes_to_write: u64, bytes_resumed: u64, files: u64) -> u64 {
    if files == 0 {
        return 0;
    }
    bytes_to_write
        .saturating_sub(bytes_resumed)
        .saturating_add(files.saturating_mul(BLOCK_ALLOWANCE))
        .saturating_add(SPACE_MARGIN)
}

/// The decision: `Ok` when `available` covers `needed`, else the one-line refusal.
pub fn check_space(dest: &Path, needed: u64, available: u64) -> Result<(), SyncError> {
    if needed <= available {
        return Ok(());
    }
    Err(SyncError::NoSpace {
        path: dest.to_path_buf(),
        needed,
        available,
    })
}

/// Bytes an unprivileged writer may still use on the file system holding `dir`.
pub(crate) fn available(dir: &Path) -> Result<u64, SyncError> {
    crate::platform::available_space(dir)
        .map_err(|e| SyncError::local("check free space of", dir, e))
}

/// `12.4 GB`: decimal units with one decimal, as a one-line message wants them.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if bytes < 1000 {
        return format!("{bytes} bytes");
    }
    let mut v = bytes as f64 / 1000.0;
    let mut unit = 0;
    while v >= 999.95 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_need_is_what_the_temp_files_lack_plus_margins() {
        // Nothing to write: nothing needed, whatever is free.
        assert_eq!(space_needed(0, 0, 0), 0);
        // 10 GB in 1,000 files, 4 GB of it resumed.
        let need = space_needed(10_000_000_000, 4_000_000_000, 1000);
        assert_eq!(need, 6_000_000_000 + 1000 * BLOCK_ALLOWANCE + SPACE_MARGIN);
        // All of it resumed: only the margins.
        assert_eq!(
            space_needed(5, 5, 1),
            BLOCK_ALLOWANCE + SPACE_MARGIN,
            "a resumed run still needs headroom"
        );
        // Resumed bytes never make the need negative.
        assert_eq!(space_needed(5, 50, 1), BLOCK_ALLOWANCE + SPACE_MARGIN);
    }

    #[test]
    fn refuses_with_both_figures_when_short() {
        let dest = Path::new("/data/mods");
        check_space(dest, 100, 100).unwrap();
        check_space(dest, 0, 0).unwrap();
        let err = check_space(dest, 12_400_000_000, 3_100_000_000).unwrap_err();
        let msg = err.to_string();
        assert_eq!(
            msg,
            "not enough space: needs 12.4 GB free in /data/mods, 3.1 GB available"
        );
        assert!(!err.is_network());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(999), "999 bytes");
        assert_eq!(human(1000), "1.0 kB");
        assert_eq!(human(12_400_000_000), "12.4 GB");
        assert_eq!(human(999_960_000), "1.0 GB");
        assert_eq!(human(3_100_000_000_000_000), "3.1 PB");
    }
}
