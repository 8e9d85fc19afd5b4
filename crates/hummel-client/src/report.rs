//! What a sync tells its caller: [`SyncOutcome`] ([`SyncReport`] after a real run, a
//! [`SyncPlanSummary`] after `--dry-run`), the optional progress bar on stderr, and
//! [`SyncProgress`], the same progress for a program to read while the sync runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

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
    /// The revision DEST is pinned to (`hummel sync --revision N`), if any: later syncs stay
    /// on it until `--revision latest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<u64>,
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

/// Where a sync stands, for a caller to poll while it runs ([`crate::sync_with_progress`]):
/// the phase and the plain bytes written of those the plan writes (downloaded, copied from
/// local files, or found in temp files an interrupted run left). Cheap to clone and to read.
#[derive(Clone, Debug, Default)]
pub struct SyncProgress {
    inner: Arc<ProgressCounters>,
}

#[derive(Debug, Default)]
struct ProgressCounters {
    phase: AtomicU8,
    total: AtomicU64,
    done: AtomicU64,
}

/// A sync's phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncPhase {
    /// Asking the master, reading the index, looking at DEST and planning.
    Checking,
    /// Writing temp files: copies of local chunks and downloads.
    Transferring,
    /// Renaming into place, deleting, saving the state.
    Applying,
    /// Finished (or failed).
    Finished,
}

/// One reading of a [`SyncProgress`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressSnapshot {
    /// The phase.
    pub phase: SyncPhase,
    /// Plain bytes the plan writes (known from [`SyncPhase::Transferring`] on).
    pub bytes_total: u64,
    /// Of those, the bytes written so far.
    pub bytes_done: u64,
}

impl SyncProgress {
    /// A new, unstarted progress.
    pub fn new() -> SyncProgress {
        SyncProgress::default()
    }

    /// The phase and bytes now.
    pub fn snapshot(&self) -> ProgressSnapshot {
        let phase = match self.inner.phase.load(Ordering::Relaxed) {
            0 => SyncPhase::Checking,
            1 => SyncPhase::Transferring,
            2 => SyncPhase::Applying,
            _ => SyncPhase::Finished,
        };
        ProgressSnapshot {
            phase,
            bytes_total: self.inner.total.load(Ordering::Relaxed),
            bytes_done: self.inner.done.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn set_phase(&self, phase: SyncPhase) {
        let n = match phase {
            SyncPhase::Checking => 0,
            SyncPhase::Transferring => 1,
            SyncPhase::Applying => 2,
            SyncPhase::Finished => 3,
        };
        self.inner.phase.store(n, Ordering::Relaxed);
    }

    fn start(&self, total: u64) {
        self.inner.done.store(0, Ordering::Relaxed);
        self.inner.total.store(total, Ordering::Relaxed);
        self.set_phase(SyncPhase::Transferring);
    }
}

/// What the transfer reports its bytes to: the bar on stderr and a caller's [`SyncProgress`].
#[derive(Clone)]
pub(crate) struct Meter {
    bar: ProgressBar,
    watch: Option<SyncProgress>,
}

impl Meter {
    /// A meter of `total` bytes: a bar when `bar` (see [`progress_bar`]), the caller's `watch`.
    pub(crate) fn new(bar: bool, total: u64, watch: Option<SyncProgress>) -> Meter {
        if let Some(w) = &watch {
            w.start(total);
        }
        Meter {
            bar: progress_bar(bar, total),
            watch,
        }
    }

    /// `n` more bytes written.
    pub(crate) fn inc(&self, n: u64) {
        self.bar.inc(n);
        if let Some(w) = &self.watch {
            w.inner.done.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The transfer is over: the bar goes.
    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
        if let Some(w) = &self.watch {
            w.set_phase(SyncPhase::Applying);
        }
    }
}
