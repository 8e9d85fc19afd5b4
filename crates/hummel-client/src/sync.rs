//! [`sync`]: one client run, plan then execute.
//!
//! 1. Lock `DEST/.hummel` (not in a dry run, which writes nothing).
//! 2. `GET /api/v1/revision` and its signed statement, checked against the key DEST trusts
//!    (`trusted::offer`; `?revision=N` when DEST is pinned to N or `--revision N` asks for it:
//!    the pin is then recorded in `.hummel/pin`, and an older revision asked for is no
//!    rollback), then [`scan::walk`] of DEST starts on its own thread. Same
//!    revision and signed tree, master and subtree as held, every cached file stats identical,
//!    no extras, all directories there: done (no-op; no index fetched).
//! 3. The index, while the walk runs: from `.hummel/index` when it is this revision and subtree,
//!    else from the master through `trusted::fetch_index` (capped, decoded and validated, of
//!    the revision and subtree asked for, leading to the signed tree digest): a delta rebuilt
//!    on the held index, taken apart rather than copied, or the whole index. Of the held index
//!    only what the new one lacks is kept, to find local data.
//!
//! Memory follows the change, not the tree, wherever it can: at 500,000 files the stat cache
//! (~55 MB, [`StatCache`]) and one index (~110 MB) are the only per-file structures held at
//! once; the walk marks cached files instead of listing them, a plan refers to index entries
//! by position, and no encoded index is held while its decoded form is (see `BENCHMARKS.md`).
//! 4. [`scan::survey`] + [`SyncPlan::build`] once the walk is done. A dry run returns the
//!    summary.
//! 5. Execute: name the temp files by content hash, resume the chunks an interrupted run
//!    verified into them (re-hashed), check the free space for the rest ([`space`]), copy
//!    local chunks, download the rest (`fetch`), seal (mode, mtime, one syncfs), then
//!    `assemble::apply`: renames in a burst, deletes last, and `tmp/` emptied. Any failure
//!    before the renames leaves DEST untouched and keeps the temp files for the next run.
//! 6. Save `.hummel/index` (staged as `index.next` before the downloads) and `.hummel/state`
//!    (atomically), then best-effort `POST /api/v1/client/report`. The new stat cache keeps the
//!    walk's stat of each file the plan left alone (`Carried`) and stats only the others.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use hummel_core::statement::{PublicKey, Statement};
use hummel_core::{EntryKind, Index, RelPath};
use hummel_proto::api::ClientReport;
use hummel_tls::ClientTls;

use crate::SyncError;
use crate::assemble::{self, CopyOutcome, Staging};
use crate::error::blocking;
use crate::fetch::{self, FetchContext, FetchStats, PER_SLAVE_LIMIT};
use crate::http::{HttpClient, MasterApi};
use crate::plan::{MAX_RANGE_GAP, MAX_RANGE_LEN, SyncPlan, SyncPlanSummary, TargetTable, coalesce};
use crate::report::{Meter, SyncOutcome, SyncPhase, SyncProgress, SyncReport};
use crate::scan::{self, FileStat, LocalTree, Tops};
use crate::space;
use crate::state::{CachedStat, ClientState, StatCache, StateDir};
use crate::trusted::{self, KeyTrust, NewIndex, Selection};

/// Which revision a sync takes (`hummel sync --revision`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevisionChoice {
    /// Revision N, and pin DEST to it: later syncs without a choice stay on it.
    Number(u64),
    /// The current revision, and unpin DEST.
    Latest,
}

/// What to sync where.
#[derive(Clone)]
pub struct SyncOptions {
    /// Master base URL, e.g. `http://10.0.0.1:7070`.
    pub master_url: String,
    /// The folder to make an exact copy.
    pub dest: PathBuf,
    /// Subtree of the repository to mirror (`DEST/x` = `REPO/SUB/x`); `None`: all of it.
    pub path: Option<RelPath>,
    /// Instead of `path`: several folders (or an admin's set of them), each at its repository
    /// path below DEST (`DEST/@ace/x` = `REPO/@ace/x`). Everything else in DEST is left alone,
    /// but a folder an earlier selection placed here and this one drops is removed.
    pub selection: Option<Selection>,
    /// Plan only; write nothing.
    pub dry_run: bool,
    /// Leave local entries that are not in the index.
    pub keep_extra: bool,
    /// Apply a revision that deletes more than half of the files DEST holds even when the
    /// admin did not confirm a mass delete.
    pub allow_mass_delete: bool,
    /// Apply a revision older than the one DEST holds.
    pub allow_rollback: bool,
    /// The master's signing key to trust (`--trust`), instead of the one DEST pinned or, on
    /// first contact, the master's own; pinned once the sync succeeds.
    pub trust: Option<PublicKey>,
    /// Sent as `X-HUMMEL-TOKEN` to the master and the slaves.
    pub read_token: Option<String>,
    /// Whom `https://` URLs (the master's and the slaves') must be certified by.
    pub tls: ClientTls,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Range requests in flight in total.
    pub concurrency: usize,
    /// Pin or unpin (`None`: the revision DEST is pinned to, else the current one).
    pub revision: Option<RevisionChoice>,
}

impl SyncOptions {
    /// Options with the defaults: whole repository, no token, 8 requests in flight.
    pub fn new(master_url: impl Into<String>, dest: impl Into<PathBuf>) -> SyncOptions {
        SyncOptions {
            master_url: master_url.into(),
            dest: dest.into(),
            path: None,
            selection: None,
            dry_run: false,
            keep_extra: false,
            allow_mass_delete: false,
            allow_rollback: false,
            trust: None,
            read_token: None,
            tls: ClientTls::system(),
            progress: false,
            concurrency: 8,
            revision: None,
        }
    }
}

impl fmt::Debug for SyncOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncOptions")
            .field("master_url", &self.master_url)
            .field("dest", &self.dest)
            .field("path", &self.path)
            .field("selection", &self.selection)
            .field("dry_run", &self.dry_run)
            .field("keep_extra", &self.keep_extra)
            .field("allow_mass_delete", &self.allow_mass_delete)
            .field("allow_rollback", &self.allow_rollback)
            .field("trust", &self.trust)
            .field(
                "read_token",
                &self.read_token.as_ref().map(|_| "<redacted>"),
            )
            .field("tls", &self.tls)
            .field("progress", &self.progress)
            .field("concurrency", &self.concurrency)
            .field("revision", &self.revision)
            .finish()
    }
}

/// Makes `opts.dest` an exact, verified copy of the master's current revision (of `opts.path`).
pub async fn sync(opts: &SyncOptions) -> Result<SyncOutcome, SyncError> {
    sync_with_progress(opts, None).await
}

/// [`sync()`], reporting its phase and the bytes it writes to `watch` as it goes (a program's
/// progress bar; the terminal's is `opts.progress`). `watch` ends [`SyncPhase::Finished`],
/// whatever the outcome.
pub async fn sync_with_progress(
    opts: &SyncOptions,
    watch: Option<SyncProgress>,
) -> Result<SyncOutcome, SyncError> {
    if let Some(w) = &watch {
        w.set_phase(SyncPhase::Checking);
    }
    let outcome = sync_pinned(opts, watch.clone()).await;
    if let Some(w) = &watch {
        w.set_phase(SyncPhase::Finished);
    }
    outcome
}

/// The revision to take: the one chosen, else the one DEST is pinned to (`.hummel/pin`), else
/// the current one; the report says which pin holds.
async fn sync_pinned(
    opts: &SyncOptions,
    watch: Option<SyncProgress>,
) -> Result<SyncOutcome, SyncError> {
    let want = match opts.revision {
        Some(RevisionChoice::Number(n)) => Some(n),
        Some(RevisionChoice::Latest) => None,
        None => {
            let sd = StateDir::new(&crate::platform::long_path(&opts.dest));
            blocking(move || Ok(sd.load_pin())).await?
        }
    };
    if let Some(n) = want {
        tracing::info!(revision = n, "pinned");
    }
    let mut outcome = sync_watched(opts, watch, want).await?;
    if let SyncOutcome::Done(r) = &mut outcome {
        r.pinned = want;
    }
    Ok(outcome)
}

async fn sync_watched(
    opts: &SyncOptions,
    watch: Option<SyncProgress>,
    want: Option<u64>,
) -> Result<SyncOutcome, SyncError> {
    let started = Instant::now();
    if opts.concurrency == 0 {
        return Err(SyncError::Options("concurrency must be at least 1".into()));
    }
    let http = HttpClient::new(opts.read_token.as_deref(), &opts.tls)?;
    let master = MasterApi::new(http.clone(), &opts.master_url)?;
    // On Windows an absolute `\\?\` path: nothing below it is cut at 260 characters.
    let dest = crate::platform::long_path(&opts.dest);
    let state_dir = StateDir::new(&dest);
    if opts.selection.is_some() && opts.path.is_some() {
        return Err(SyncError::Options(
            "a subtree and a selection of folders cannot be synced at once".into(),
        ));
    }
    // What the state records: the subtree, or the selection's key (which no subtree is).
    let subtree = match &opts.selection {
        Some(s) => Some(s.key()),
        None => opts.path.as_ref().map(|p| p.as_str().to_string()),
    };
    tracing::debug!(master = master.base(), dest = %dest.display(), subtree = ?subtree, "sync starting");

    let _lock = if opts.dry_run {
        None
    } else {
        let (d, sd) = (dest.clone(), state_dir.clone());
        Some(
            blocking(move || {
                fs::create_dir_all(&d).map_err(|e| SyncError::local("create", &d, e))?;
                sd.prepare()
            })
            .await?,
        )
    };
    let mut held = {
        let sd = state_dir.clone();
        blocking(move || Ok(sd.load_state())).await?
    };
    // The held stat cache goes to the walk, which marks the files it vouches for.
    let cache: Arc<StatCache> = Arc::new(
        held.as_mut()
            .map(|h| std::mem::take(&mut h.files))
            .unwrap_or_default(),
    );

    // What the master offers, as the key this folder trusts signed it (`trusted`).
    let pinned = held.as_ref().and_then(|h| h.signing_key);
    let offer = trusted::offer_revision(&master, pinned, opts.trust, want).await?;
    let revision = offer.revision();
    // The master has the revision asked for: the pin (or its removal) is recorded now, so that
    // a sync that fails later is taken up again at the same revision.
    if !opts.dry_run && opts.revision.is_some() {
        let sd = state_dir.clone();
        blocking(move || sd.save_pin(want)).await?;
    }
    let key = KeyReport::of(&offer);
    // The repository DEST holds a revision of, when it is this master's: numbers compare only
    // within one repository.
    let same_repo = held
        .as_ref()
        .filter(|h| same_repository(h, Some(&offer.statement.repository_id), master.base()));
    // An older revision is taken when asked for by number (a pin), never unasked.
    if let Some(h) = same_repo
        && revision < h.revision
        && !opts.allow_rollback
        && want != Some(revision)
    {
        return Err(SyncError::Rollback {
            dest: dest.clone(),
            held: h.revision,
            offered: revision,
        });
    }
    // Only the top-level entries a revision applied here placed are looked at (ownership);
    // the new revision's names are added once its index is known.
    let held_tops: Tops = held
        .as_ref()
        .map(|h| h.owned.iter().cloned().collect())
        .unwrap_or_default();
    // The walk of DEST runs while the index is loaded and fetched; only a possible no-op (the
    // held revision is the current one) waits for it first.
    let mut walking = {
        let (d, tops, c) = (dest.clone(), held_tops.clone(), cache.clone());
        Some(tokio::task::spawn_blocking(move || {
            scan::walk(&d, &tops, c)
        }))
    };
    let mut walked: Option<Arc<LocalTree>> = None;

    let same_source = same_repo.filter(|h| h.subtree == subtree);
    // DEST holds exactly the revision the master offers: same number and same signed tree.
    let holds_current =
        same_source.filter(|h| h.revision == revision && same_content(h, &offer.statement));
    if let Some(h) = holds_current {
        let tree = finish_walk(&mut walking).await?;
        walked = Some(tree.clone());
        if scan::unchanged_since(&h.dirs, &tree, opts.keep_extra) {
            let files = cache.len() as u64;
            tracing::info!(revision, files, "already up to date");
            if opts.dry_run {
                return Ok(SyncOutcome::DryRun(SyncPlanSummary {
                    revision,
                    no_op: true,
                    files_unchanged: files,
                    signing_key: key.fingerprint,
                    signing_key_trust: key.trust,
                    ..SyncPlanSummary::default()
                }));
            }
            if h.signing_key != Some(offer.key()) {
                // The key was pinned now (first contact, --trust, a rotation): keep it.
                let mut state = h.clone();
                state.files = (*cache).clone();
                state.signing_key = Some(offer.key());
                let sd = state_dir.clone();
                blocking(move || sd.save_state(&state)).await?;
            }
            report_to_master(&master, &state_dir, h, files, &subtree, Vec::new()).await;
            return Ok(SyncOutcome::Done(SyncReport {
                revision,
                no_op: true,
                files_unchanged: files,
                index_reused: true,
                duration_ms: started.elapsed().as_millis() as u64,
                signing_key: key.fingerprint,
                signing_key_trust: key.trust,
                ..SyncReport::default()
            }));
        }
    } else if let Some(h) = same_source.filter(|h| h.revision == revision) {
        tracing::warn!(
            revision,
            held = ?h.tree_digest,
            offered = %offer.statement.tree_digest,
            "the master offers another tree under the revision number this folder holds"
        );
    }

    // The index: the held one if it is this revision of this subtree, else the master's.
    // The held index is read only where it serves: as this revision, or as the base of a
    // delta (decoded as it is read: its bytes are never in memory).
    let held_may_serve =
        same_source.is_some_and(|h| holds_current.is_some() || h.revision < revision);
    let held_index: Option<Index> = if held_may_serve {
        let sd = state_dir.clone();
        blocking(move || Ok(sd.read_index())).await?
    } else {
        None
    };
    let wanted = |i: &Index| i.revision == revision && i.root == opts.path;
    // The held index is that of the held state only when their numbers agree (the index is
    // saved first); only then is its identity known.
    let held_index_known = |i: &Index| same_source.is_some_and(|h| h.revision == i.revision);
    let mut index_received = (false, 0u64);
    let identity = Identity {
        repository_id: Some(offer.statement.repository_id.clone()),
        revision_hash: offer.info.index_hash,
        tree_digest: offer.statement.tree_digest,
        signing_key: offer.key(),
        mass_delete_confirmed: offer.statement.mass_delete_confirmed,
    };
    let (index, new_index, old_index, index_reused) = match held_index {
        Some(index) if wanted(&index) && holds_current.is_some() => {
            tracing::debug!(revision, "reusing the held index");
            (index, NewIndex::Held, None, true)
        }
        held_index => {
            // Holding an older revision of this subtree from this repository, ask only for what
            // changed since; the master may still answer with the whole index. The held index
            // is taken apart by the delta's rebuild, not copied (~100 MB at 500,000 files).
            let base = held_index
                .filter(|i| held_index_known(i) && i.root == opts.path && i.revision < revision);
            // A selection's held index is a cut of the whole one: no delta applies to it.
            let since = base
                .as_ref()
                .filter(|_| opts.selection.is_none())
                .map(|i| i.revision);
            let fetched = trusted::fetch_index(
                &master,
                &offer,
                opts.path.as_ref(),
                since,
                base,
                opts.selection.as_ref(),
            )
            .await?;
            index_received = (
                since.is_some() && fetched.received.delta,
                fetched.received.bytes,
            );
            let index = fetched.index;
            tracing::info!(
                revision,
                files = index.file_count(),
                bytes = index.total_size(),
                "fetched index"
            );
            (index, fetched.encoded, fetched.replaced, false)
        }
    };
    let index = Arc::new(index);
    // Names DEST's file system cannot hold refuse the sync here, before anything is written.
    let case_blind = {
        let (i, d, sd, dry) = (index.clone(), dest.clone(), state_dir.clone(), opts.dry_run);
        blocking(move || crate::names::check(&i, &d, (!dry).then(|| sd.root()))).await?
    };
    let tree = match walked {
        Some(tree) => tree,
        None => finish_walk(&mut walking).await?,
    };
    // The new revision's top-level names are Hummel's too: list those not walked yet.
    let index_tops = index_top_names(&index);
    let more: Tops = index_tops.difference(&held_tops).cloned().collect();
    let tree = if more.is_empty() {
        tree
    } else {
        let (d, c) = (dest.clone(), cache.clone());
        let mut tree = Arc::unwrap_or_clone(tree);
        blocking(move || {
            tree.merge(scan::walk(&d, &more, c)?);
            Ok(Arc::new(tree))
        })
        .await?
    };
    // Entries DEST already had under names it did not manage yet: taken over, and said so.
    let adopted: Vec<String> = index_tops
        .iter()
        .filter(|t| !held_tops.contains(*t) && tree.get(t).is_some())
        .cloned()
        .collect();
    if !adopted.is_empty() {
        tracing::warn!(
            entries = %adopted.join(", "),
            "taking over entries this folder already had: they become exact copies of the repository's"
        );
    }

    // The new index waits on disk, not in memory, while the run plans and downloads (44 MB
    // at 500,000 files). Should that write fail (a full disk), it stays pending: the
    // free-space check then says what is missing, and execution stages it after that.
    let new_index = if opts.dry_run {
        new_index
    } else {
        let (sd, i) = (state_dir.clone(), index.clone());
        blocking(move || {
            Ok(new_index.stage(&sd, &i).unwrap_or_else(|(pending, e)| {
                tracing::debug!("index not staged yet: {e}");
                pending
            }))
        })
        .await?
    };

    // Survey DEST and plan.
    drop(cache);
    let (plan, files_hashed) = {
        let (d, t, i, keep) = (dest.clone(), tree.clone(), index.clone(), opts.keep_extra);
        blocking(move || {
            let content = scan::survey(&d, &t, &i, old_index.as_ref());
            tracing::debug!(
                hashed = content.hashed,
                rechunked = content.rechunked,
                presumed = content.presumed,
                "surveyed local files"
            );
            Ok((SyncPlan::build(&i, &t, &content, keep), content.hashed))
        })
        .await?
    };
    tracing::info!(
        write = plan.writes.len(),
        unchanged = plan.unchanged.len(),
        delete = plan.deletes.len(),
        download = plan.bytes_to_download,
        reuse = plan.bytes_to_reuse,
        "planned"
    );
    // A revision that deletes most of what DEST holds needs a human: the admin's confirmation
    // in the revision, or the user's flag.
    let refused = plan
        .mass_delete(&tree)
        .filter(|_| !identity.mass_delete_confirmed && !opts.allow_mass_delete)
        .map(|(deleting, holding)| SyncError::MassDelete {
            dest: dest.clone(),
            deleting,
            holding,
            revision,
        });
    if opts.dry_run {
        let mut summary = plan.summary(&index);
        summary.adopted = adopted;
        summary.refused = refused.map(|e| e.to_string());
        summary.signing_key = key.fingerprint;
        summary.signing_key_trust = key.trust;
        return Ok(SyncOutcome::DryRun(summary));
    }
    if let Some(e) = refused {
        return Err(e);
    }
    // The walk (and the stat cache in it) is not needed to carry the plan out: only the stats
    // it vouched for, of files the plan leaves alone, go on to the state.
    let carried = Carried::from_walk(&plan, &tree, &index);
    drop(tree);

    let (report_dir, report_subtree) = (state_dir.clone(), subtree.clone());
    let run = Execution {
        opts,
        master: &master,
        http,
        dest,
        state_dir,
        subtree,
        index,
        new_index,
        index_reused,
        identity,
        case_blind,
        carried,
        watch,
    };
    let mut report = match run.execute(plan, index_tops, held_tops).await {
        Ok(report) => report,
        Err(e) => {
            // Slaves that failed or lied are reported even when the sync fails (the master
            // probes them), with what DEST still holds.
            if let SyncError::PackUnavailable { bad_slaves, .. } = &e
                && !bad_slaves.is_empty()
            {
                let sd = report_dir.clone();
                let held = blocking(move || Ok(sd.load_state())).await.ok().flatten();
                let (revision, bytes, packs, files) = held.map_or((0, 0, Vec::new(), 0), |h| {
                    (h.revision, h.bytes, h.packs, h.files.len() as u64)
                });
                send_report(
                    &master,
                    &report_dir,
                    Held {
                        revision,
                        bytes,
                        packs,
                        files,
                    },
                    &report_subtree,
                    bad_slaves.clone(),
                )
                .await;
            }
            return Err(e);
        }
    };
    report.adopted = adopted;
    report.signing_key = key.fingerprint;
    report.signing_key_trust = key.trust;
    report.files_hashed = files_hashed;
    (report.index_delta, report.index_bytes_downloaded) = index_received;
    report.duration_ms = started.elapsed().as_millis() as u64;
    tracing::info!(
        revision = report.revision,
        written = report.files_written,
        deleted = report.files_deleted,
        downloaded = report.bytes_downloaded,
        reused = report.bytes_reused,
        ms = report.duration_ms,
        "sync complete"
    );
    Ok(SyncOutcome::Done(report))
}

/// The result of the walk started by [`sync`] (taken once).
async fn finish_walk(
    walking: &mut Option<tokio::task::JoinHandle<Result<LocalTree, SyncError>>>,
) -> Result<Arc<LocalTree>, SyncError> {
    let task = walking.take().expect("the walk is awaited once");
    Ok(Arc::new(task.await.map_err(SyncError::join)??))
}

/// What names a revision besides its number (kept in the state, checked on the next run).
#[derive(Clone, Debug)]
pub(crate) struct Identity {
    repository_id: Option<String>,
    revision_hash: Option<hummel_core::Hash>,
    tree_digest: hummel_core::Hash,
    signing_key: PublicKey,
    mass_delete_confirmed: bool,
}

/// The signing key of a run and how it came to be trusted, for the report.
pub(crate) struct KeyReport {
    pub(crate) fingerprint: String,
    pub(crate) trust: KeyTrust,
}

impl KeyReport {
    pub(crate) fn of(offer: &trusted::Offer) -> KeyReport {
        KeyReport {
            fingerprint: offer.key().to_string(),
            trust: offer.trust,
        }
    }
}

/// The held state is of the repository the master serves: by id when both name one (a
/// master moved to another URL is still the same repository), else by the master's URL.
pub(crate) fn same_repository(
    held: &ClientState,
    repository_id: Option<&String>,
    master_url: &str,
) -> bool {
    match (&held.repository_id, repository_id) {
        (Some(h), Some(i)) => h == i,
        _ => held.master_url == master_url,
    }
}

/// The held revision is the tree the master signed under that number (a master restored from
/// a backup may have published another tree under the same number).
pub(crate) fn same_content(held: &ClientState, statement: &Statement) -> bool {
    held.tree_digest == Some(statement.tree_digest)
}

/// The top-level names of an index (every parent directory is listed, so these are the
/// entries without a `/`).
pub(crate) fn index_top_names(index: &Index) -> Tops {
    index
        .entries
        .iter()
        .filter(|e| !e.path.as_str().contains('/'))
        .map(|e| e.path.to_string())
        .collect()
}

impl NewIndex {
    /// Bytes it still needs on disk (a rebuilt index: unknown until encoded, counted as 0).
    fn pending_len(&self) -> u64 {
        match self {
            NewIndex::Bytes(b) => b.len() as u64,
            _ => 0,
        }
    }

    /// Writes it as `index.next` (`index`: the index it encodes); on failure it is handed back
    /// with the error. Blocking.
    fn stage(self, sd: &StateDir, index: &Index) -> Result<NewIndex, (NewIndex, SyncError)> {
        let staged = match &self {
            NewIndex::Held | NewIndex::Staged => return Ok(self),
            NewIndex::Bytes(bytes) => sd.stage_index(bytes),
            NewIndex::Rebuilt => sd.stage_index_of(index),
        };
        match staged {
            Ok(()) => Ok(NewIndex::Staged),
            Err(e) => Err((self, e)),
        }
    }
}

/// Everything execution needs, gathered by [`sync`].
struct Execution<'a> {
    opts: &'a SyncOptions,
    master: &'a MasterApi,
    http: HttpClient,
    dest: PathBuf,
    state_dir: StateDir,
    subtree: Option<String>,
    index: Arc<Index>,
    /// The new index, unless reused or already staged as `index.next`.
    new_index: NewIndex,
    index_reused: bool,
    identity: Identity,
    /// DEST's file system does not tell case apart (`names::check`'s probe).
    case_blind: bool,
    /// Stats the walk vouched for, of files the plan leaves alone.
    carried: Carried,
    /// The caller's progress, if any.
    watch: Option<SyncProgress>,
}

/// The stat-cache entries a sync keeps without a second stat: files the plan leaves alone
/// (neither written nor touched) whose stat the walk found as the cache had it, by index
/// entry position. Everything else is stat'ed after the renames.
///
/// Keeping the walk's stat rather than taking a new one is also the safer choice: a file the
/// user changes while the sync runs then no longer matches its entry, and the next run hashes
/// it, where a fresh stat would vouch for content nobody hashed.
#[derive(Debug, Default)]
pub(crate) struct Carried {
    /// Index entry positions, ascending.
    entries: Vec<u32>,
    /// Their stats, as the walk found them (the hash is the index entry's).
    stats: Vec<FileStat>,
}

impl Carried {
    fn from_walk(plan: &SyncPlan, tree: &LocalTree, index: &Index) -> Carried {
        let mut touched = plan.touch.iter().map(|t| t.entry).peekable();
        let mut carried = Carried::default();
        for &entry in &plan.unchanged {
            while touched.next_if(|&t| t < entry).is_some() {}
            if touched.peek() == Some(&entry) {
                continue;
            }
            let e = &index.entries[entry as usize];
            if let EntryKind::File(f) = &e.kind
                && let Some((hash, stat)) = tree.cached_file(e.path.as_str())
                && hash == f.hash
            {
                carried.entries.push(entry);
                carried.stats.push(stat);
            }
        }
        carried
    }

    /// The carried stat of entry `entry`, if any; calls must come in ascending order of
    /// `entry`, with `cursor` starting at 0.
    fn take(&self, cursor: &mut usize, entry: u32) -> Option<FileStat> {
        while self.entries.get(*cursor).is_some_and(|&e| e < entry) {
            *cursor += 1;
        }
        (self.entries.get(*cursor) == Some(&entry)).then(|| self.stats[*cursor])
    }
}

impl Execution<'_> {
    /// Carries `plan` out; DEST then manages `index_tops`, and those of `held_tops` that are
    /// still there.
    async fn execute(
        mut self,
        mut plan: SyncPlan,
        index_tops: Tops,
        held_tops: Tops,
    ) -> Result<SyncReport, SyncError> {
        let deleted = plan.removed_paths();
        let progress = Meter::new(self.opts.progress, plan.bytes_to_write, self.watch.clone());
        let targets = Arc::new(std::mem::take(&mut plan.targets));
        let plan = Arc::new(plan);
        // Temp files: take over what an interrupted run verified and check the free space
        // for the rest (and the new index); nothing is created before that. A failure from
        // here on keeps the temp files (verified chunks only) for the next run; nothing
        // incomplete is renamed.
        let index_len = self.new_index.pending_len();
        let (staging, resumed) = {
            let (tmp, p, i, d) = (
                self.state_dir.tmp_dir(),
                plan.clone(),
                self.index.clone(),
                self.dest.clone(),
            );
            blocking(move || {
                let staging = Staging::new(&tmp, &p.writes, i);
                let resumed = staging.resume(&p.writes)?;
                let needed =
                    space::space_needed(p.bytes_to_write, resumed.bytes, p.writes.len() as u64)
                        + index_len;
                if needed > 0 {
                    space::check_space(&d, needed, space::available(&tmp)?)?;
                }
                Ok((Arc::new(staging), resumed))
            })
            .await?
        };
        if resumed.files > 0 || resumed.deleted > 0 {
            tracing::info!(
                files = resumed.files,
                chunks = resumed.chunks,
                bytes = resumed.bytes,
                deleted = resumed.deleted,
                "resuming from temp files of an earlier run"
            );
        }
        progress.inc(resumed.bytes);
        // The new index waits on disk until the state is saved (if `sync` could not stage it).
        {
            let (sd, i) = (self.state_dir.clone(), self.index.clone());
            let pending = std::mem::replace(&mut self.new_index, NewIndex::Staged);
            blocking(move || pending.stage(&sd, &i).map_err(|(_, e)| e)).await?;
        }

        let transferred = self.transfer(&plan, &targets, &staging, &progress).await;
        progress.finish();
        let (copied, fetched) = transferred?;
        tracing::debug!("temp files complete and durable");

        let applied = {
            let (d, p, s, blind) = (
                self.dest.clone(),
                plan.clone(),
                staging.clone(),
                self.case_blind,
            );
            blocking(move || assemble::apply(&d, &p, &s, blind)).await?
        };
        tracing::debug!("renamed into place");
        {
            let tmp = self.state_dir.tmp_dir();
            let _ = blocking(move || {
                assemble::clear_tmp(&tmp);
                Ok(())
            })
            .await;
        }
        // The plan is carried out: free it before the state (a stat cache entry per file) is
        // built, so the two never take memory at once (~100 MB each at 500,000 files).
        let done = (
            plan.writes.len() as u64,
            plan.unchanged.len() as u64,
            plan.touch.len() as u64,
            plan.bytes_to_write,
        );
        drop((plan, targets, staging));

        // Remember what DEST now holds: stat cache (the walk's stats of files left alone, a
        // fresh stat of the others), then index, then state.
        // The index (~100 MB at 500,000 files) is last needed here: it goes with the task.
        let revision = self.index.revision;
        let state = {
            let (d, i, base, sub, id, carried) = (
                self.dest.clone(),
                self.index,
                self.master.base().to_string(),
                self.subtree.clone(),
                self.identity.clone(),
                self.carried,
            );
            blocking(move || {
                let mut state = state_after_sync(&d, &i, base, sub, &carried);
                state.repository_id = id.repository_id;
                state.revision_hash = id.revision_hash;
                state.tree_digest = Some(id.tree_digest);
                state.signing_key = Some(id.signing_key);
                // A name of an earlier revision stays managed while it is still there (kept
                // with --keep-extra), so that a later sync without the flag removes it.
                let mut owned = index_tops;
                owned.extend(
                    held_tops
                        .into_iter()
                        .filter(|t| fs::symlink_metadata(d.join(t)).is_ok()),
                );
                state.owned = owned.into_iter().collect();
                Ok(state)
            })
            .await?
        };
        crate::failpoint::hit("save-state");
        let state = {
            let (sd, staged) = (self.state_dir.clone(), !self.index_reused);
            blocking(move || {
                if staged {
                    sd.commit_index()?;
                }
                sd.save_state(&state)?;
                Ok(state)
            })
            .await?
        };
        let bad_slaves: Vec<String> = fetched.bad_slaves.iter().cloned().collect();
        report_to_master(
            self.master,
            &self.state_dir,
            &state,
            state.files.len() as u64,
            &self.subtree,
            bad_slaves.clone(),
        )
        .await;

        Ok(SyncReport {
            revision,
            no_op: false,
            files_written: done.0,
            files_deleted: applied.files_deleted,
            files_unchanged: done.1,
            files_touched: done.2,
            files_hashed: 0,
            dirs_created: applied.dirs_created,
            dirs_deleted: applied.dirs_deleted,
            bytes_downloaded: fetched.bytes_downloaded,
            bytes_reused: copied.bytes,
            bytes_resumed: resumed.bytes,
            bytes_written: done.3,
            chunks_downloaded: fetched.chunks_downloaded,
            chunks_reused: copied.chunks,
            requests: fetched.requests,
            failed_requests: fetched.failed_requests,
            duplicate_requests: fetched.duplicate_requests,
            slaves_used: fetched.bytes_by_slave.keys().cloned().collect(),
            bytes_by_slave: fetched.bytes_by_slave,
            bad_slaves,
            index_reused: self.index_reused,
            index_delta: false,
            index_bytes_downloaded: 0,
            duration_ms: 0,
            deleted,
            adopted: Vec::new(),
            signing_key: String::new(),
            signing_key_trust: KeyTrust::default(),
            // Set by `sync_pinned`.
            pinned: None,
        })
    }

    /// Local copies, downloads (including chunks whose local copy failed), sealing. Touches
    /// only the temp files.
    async fn transfer(
        &self,
        plan: &Arc<SyncPlan>,
        targets: &Arc<TargetTable>,
        staging: &Arc<Staging>,
        progress: &Meter,
    ) -> Result<(CopyOutcome, FetchStats), SyncError> {
        let copied = {
            let (d, p, i, t, s, pb) = (
                self.dest.clone(),
                plan.clone(),
                self.index.clone(),
                targets.clone(),
                staging.clone(),
                progress.clone(),
            );
            blocking(move || assemble::copy_local(&d, &p.copies, &i, &t, &s, &pb)).await?
        };
        // Chunks every target of which holds already (resumed) are not downloaded again.
        let mut ranges = if staging.resumed_any() {
            let wanted = |ci: &u32| targets.get(ci).is_some_and(|t| staging.wants(t));
            let chunks: Vec<u32> = plan
                .downloads
                .iter()
                .flat_map(|r| r.chunks.iter().copied())
                .filter(wanted)
                .collect();
            coalesce(&self.index, chunks, MAX_RANGE_GAP, MAX_RANGE_LEN)
        } else {
            plan.downloads.clone()
        };
        if !copied.failed.is_empty() {
            tracing::info!(
                chunks = copied.failed.len(),
                "local chunks unusable, downloading them"
            );
            ranges.extend(coalesce(
                &self.index,
                copied.failed.clone(),
                MAX_RANGE_GAP,
                MAX_RANGE_LEN,
            ));
        }
        let fetched = if ranges.is_empty() {
            FetchStats::default()
        } else {
            let packs: Vec<u32> = ranges
                .iter()
                .map(|r| r.pack)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let located = self.master.locate(&packs).await?;
            tracing::debug!(
                packs = packs.len(),
                slaves = located.slaves.len(),
                ranges = ranges.len(),
                "downloading"
            );
            let ctx = Arc::new(FetchContext {
                http: self.http.clone(),
                index: self.index.clone(),
                targets: targets.clone(),
                staging: staging.clone(),
                concurrency: self.opts.concurrency,
                per_slave: PER_SLAVE_LIMIT,
                progress: progress.clone(),
            });
            fetch::fetch_all(ctx, ranges, &packs, located).await?
        };
        {
            let (p, s, t) = (plan.clone(), staging.clone(), self.state_dir.tmp_dir());
            blocking(move || assemble::seal(&p.writes, &s, &t)).await?;
        }
        Ok((copied, fetched))
    }
}

/// The state to save after a sync of `index`: stat cache of every file as it is now.
fn state_after_sync(
    dest: &Path,
    index: &Index,
    master_url: String,
    subtree: Option<String>,
    carried: &Carried,
) -> ClientState {
    let mut files = StatCache::default();
    let mut dirs = Vec::new();
    let mut cursor = 0;
    for (entry, e) in index.entries.iter().enumerate() {
        match &e.kind {
            EntryKind::Dir(_) => dirs.push(e.path.to_string()),
            EntryKind::File(f) => {
                let stat = carried.take(&mut cursor, entry as u32).or_else(|| {
                    fs::symlink_metadata(e.path.to_path(dest))
                        .ok()
                        .filter(|m| m.is_file())
                        .map(|m| FileStat::from_metadata(&m))
                });
                match stat {
                    Some(stat) => {
                        // Index entries are sorted and unique, as the cache wants them.
                        let added = files.push(e.path.as_str(), CachedStat::new(&stat, f.hash));
                        debug_assert!(added, "index entries out of order");
                    }
                    None => tracing::warn!(path = %e.path, "file vanished right after the sync"),
                }
            }
        }
    }
    ClientState {
        master_url,
        subtree,
        revision: index.revision,
        dirs,
        packs: index.packs.iter().map(|p| p.number).collect(),
        bytes: index.total_size(),
        files,
        repository_id: None,
        revision_hash: None,
        owned: index_top_names(index).into_iter().collect(),
        tree_digest: None,
        signing_key: None,
    }
}

/// `POST /api/v1/client/report`, best effort: a failure is only a warning.
async fn report_to_master(
    master: &MasterApi,
    state_dir: &StateDir,
    state: &ClientState,
    files: u64,
    subtree: &Option<String>,
    bad_slaves: Vec<String>,
) {
    let held = Held {
        revision: state.revision,
        bytes: state.bytes,
        packs: state.packs.clone(),
        files,
    };
    send_report(master, state_dir, held, subtree, bad_slaves).await;
}

/// What DEST holds, as a report tells the master.
struct Held {
    revision: u64,
    bytes: u64,
    packs: Vec<u32>,
    files: u64,
}

/// [`report_to_master`] of what DEST holds (after a failed sync: what it held before).
async fn send_report(
    master: &MasterApi,
    state_dir: &StateDir,
    held: Held,
    subtree: &Option<String>,
    bad_slaves: Vec<String>,
) {
    let sd = state_dir.clone();
    let (client_id, client_key, pinned) =
        match blocking(move || Ok((sd.client_id()?, sd.client_key()?, sd.load_pin()))).await {
            Ok(identity) => identity,
            Err(e) => {
                tracing::warn!("no client id, not reporting to the master: {e}");
                return;
            }
        };
    let report = ClientReport {
        client_id,
        client_key: Some(client_key),
        revision: held.revision,
        // A selection's key separates its folders with line breaks, which a report's path
        // may not hold: shown with commas.
        path: subtree
            .as_deref()
            .map(|s| s.replace('\n', ", "))
            .unwrap_or_default(),
        files: held.files,
        bytes: held.bytes,
        packs: held.packs,
        bad_slaves,
        // The master keeps the pinned revision from its garbage collection.
        pinned,
    };
    match master.report(&report).await {
        Ok(()) => {}
        Err(SyncError::MasterRefused { code, .. }) if code == "client_key_mismatch" => {
            // Another folder holds this id with its own key (a copy of this one, or this one's
            // key file was lost): become a new client from the next report on.
            tracing::warn!(
                "the master holds this client id with another key; a new id is made for the \
                 next report"
            );
            let sd = state_dir.clone();
            if let Err(e) = blocking(move || sd.forget_client_identity()).await {
                tracing::warn!("could not forget the client id: {e}");
            }
        }
        Err(e) => tracing::warn!("could not report to the master: {e}"),
    }
}
