//! What a sync tells its caller: [`SyncOutcome`] ([`SyncReport`] after a real run, a
//! [`SyncPlanSummary`] after `--dry-run`), and the optional progress bar on stderr.

use std::collections::BTreeMap;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::plan::SyncPlanSummary;

/// The result of [`crate::sync()`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum SyncOutcome {
    /// DEST now holds the revision.
    Done(SyncReport),
    /// `--dry-run`: what would have been done; nothing was written.
    DryRun(SyncPlanSummary),
}

/// What a completed sync did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReport {
    /// Revision DEST now holds.
    pub revision: u64,
    /// DEST already held it: no index fetched, nothing written.
    pub no_op: bool,
    /// Files written (new or replaced).
    pub files_written: u64,
    /// Files, symlinks and special files deleted.
    pub files_deleted: u64,
    /// Files left as they were (content already right).
    pub files_unchanged: u64,
    /// Unchanged files whose mode or mtime was fixed.
    pub files_touched: u64,
    /// Local files hashed because the stat cache could not vouch for them.
    pub files_hashed: u64,
    /// Directories created.
    pub dirs_created: u64,
    /// Directories deleted.
    pub dirs_deleted: u64,
    /// Compressed bytes received from slaves (verified ranges).
    pub bytes_downloaded: u64,
    /// Plain bytes taken from local files instead of downloading.
    pub bytes_reused: u64,
    /// Plain bytes found verified in temp files an interrupted run left (not downloaded or
    /// copied again).
    #[serde(default)]
    pub bytes_resumed: u64,
    /// Plain bytes of the files written.
    pub bytes_written: u64,
    /// Chunks downloaded and verified.
    pub chunks_downloaded: u64,
    /// Chunks copied from local files.
    pub chunks_reused: u64,
    /// Range requests sent to slaves (including failed ones).
    pub requests: u64,
    /// Range requests that failed and were retried elsewhere.
    pub failed_requests: u64,
    /// Range requests that repeated a straggling range on a faster slave (first copy wins).
    pub duplicate_requests: u64,
    /// Compressed bytes each slave delivered, by slave id.
    pub bytes_by_slave: BTreeMap<String, u64>,
    /// Slaves that served data.
    pub slaves_used: Vec<String>,
    /// Slaves that failed or served bad data.
    pub bad_slaves: Vec<String>,
    /// The index came from the state folder rather than the master.
    pub index_reused: bool,
    /// The master sent only the changes since the revision held (rebuilt locally).
    pub index_delta: bool,
    /// Bytes of index (or index delta) received from the master.
    pub index_bytes_downloaded: u64,
    /// Wall time.
    pub duration_ms: u64,
    /// The paths deleted (files, symlinks, special files and folders), deepest first.
    #[serde(default)]
    pub deleted: Vec<String>,
    /// Top-level entries DEST already had and this sync took over (see
    /// [`SyncPlanSummary::adopted`]).
    #[serde(default)]
    pub adopted: Vec<String>,
    /// The fingerprint of the master's signing key that signed the revision.
    #[serde(default)]
    pub signing_key: String,
    /// How that key came to be trusted: `pinned` before, `given` with `--trust`,
    /// `first_contact` (pinned now, vouched for by nothing but the master) or `rotated` (the
    /// pinned key handed over to it).
    #[serde(default)]
    pub signing_key_trust: crate::KeyTrust,
}

/// A bar of bytes written (downloaded + reused) over the bytes to write, with rate and ETA, on
/// stderr; hidden when not `enabled`.
pub(crate) fn progress_bar(enabled: bool, total: u64) -> ProgressBar {
    if !enabled || total == 0 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] [{wide_bar}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
