//! [`Master`]: the facade the HTTP layer and the binary use, over the master's components, and
//! the operations that span them (builds, publishing, slave and client requests, status).
//!
//! The state is split into components, each with its own locks and tests:
//! - [`Catalog`] (`crate::catalog`): the current revision (readers take an `Arc` and never
//!   wait for a build), the history, the pack table and the cache of one older revision;
//! - [`Fleet`] (`crate::fleet`): slaves and clients ([`Tracker`]), their enrolled keys
//!   (`crate::identity`), what probes found of their claims (`crate::probe`: `locate` lists a
//!   slave for a pack only once a probe verified it there), hashlist epochs, the per-slave
//!   ordering stripes and the cached placement ([`Plan`]);
//! - [`Builds`] (`crate::builds`): the builds ([`BuildRun`]: at most one running, on its own
//!   thread), the build epoch and the clean stop's flag;
//! - [`Upkeep`] (`crate::maintenance`): the maintenance thread's control (repack, then garbage
//!   collection) and their progress and counters;
//! - shared by all: the configuration, the database (one connection behind a mutex), the pack
//!   store, the counters of `/metrics`, the per-address limits (`crate::limits`), the event
//!   streams (`crate::events`) and the signing key (`crate::signing`).
//!
//! **Database first, memory second, and no lock across a commit.** Every change is written to
//! the database first, then applied to memory under a short lock. No lock a reader takes
//! (catalog, tracker, identities, trust book, plan cache, build book) is held across a
//! commit; the only locks held across one are the database's own mutex, a slave's or client's
//! ordering stripe ([`Fleet::order`]: its requests apply in the order they committed) and the
//! builds' start lock ([`Builds::hold_starts`]). So `locate` never waits for a disk flush.
//! Lock order: ordering stripe, builds' start lock, plan cache, the catalog's pack table,
//! tracker, trust book, identities, database (each lock may be taken while holding those before
//! it, never those after); the catalog's other locks are taken alone. Each component's own
//! order is in its module map.
//!
//! A slave's complete hashlist replaces its replica set and gets a fresh [`HashlistVersion`];
//! the changes its heartbeats carry apply only on top of the version held
//! ([`Master::record_heartbeat`]), otherwise the answer asks for the complete hashlist again.
//!
//! Methods that touch the database or may compute placement are blocking; the HTTP layer calls
//! them through `spawn_blocking`.

use std::collections::HashMap;
use std::fs;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use hummel_core::{ChunkLocation, Hash, Index, PackInfo, RelPath};
use hummel_proto::api::{
    Assignment, BuildQuery, BuildState, BuildStatus, DrainState, FALLBACK_ID, HashlistVersion,
    Heartbeat, LocateRequest, LocateResponse, ReplicatingStatus, ReplicationHealth, RevisionInfo,
    SlaveDirective, SlaveEndpoint, SlaveHashlist, SlaveState, SlaveStatus, StatusResponse,
};
use hummel_store::BlobStore;

use crate::build::{self, BuildError, BuildInputs, BuildOptions, BuildRun, Preparation};
use crate::builds::{Builds, StartsHeld};
use crate::catalog::Catalog;
use crate::config::{MasterConfig, REPACK_LEVELS};
use crate::db::{Db, Publication, RevisionRow};
use crate::error::MasterError;
use crate::events::Events;
use crate::fleet::{Fleet, Plan};
use crate::identity::Identities;
use crate::limits::Limits;
use crate::maintenance::Upkeep;
use crate::metrics::Metrics;
use crate::probe::TrustBook;
use crate::revision::{self, LoadedRevision};
use crate::signing::Signing;
use crate::tracker::{Liveness, SlaveRecord, Tracker, Vetting};
use crate::{lock, now_ms, now_unix, read, write};

/// The id under which the embedded store (`hummel serve`) appears to clients and in status.
pub const EMBEDDED_SLAVE_ID: &str = "embedded";
/// Most assignments sent in one directive.
pub(crate) const MAX_ASSIGNMENTS: usize = 256;
/// Most packs a directive tells a slave to drop.
pub(crate) const MAX_DROPS: usize = 1024;

/// A Hummel master. Cheap to clone: all state is shared.
#[derive(Clone)]
pub struct Master {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: MasterConfig,
    pub db_path: PathBuf,
    /// Random hex made with the database ([`Db::repository_id`]).
    pub repository_id: String,
    pub db: Mutex<Db>,
    pub store: Arc<BlobStore>,
    pub metrics: Metrics,
    public_url: RwLock<Option<String>>,
    /// Revisions and packs (`crate::catalog`).
    pub catalog: Catalog,
    /// Slaves, clients, keys, probes and the cached placement (`crate::fleet`).
    pub fleet: Fleet,
    /// Builds, their epoch and the clean stop (`crate::builds`).
    pub builds: Builds,
    /// The maintenance thread, the repack and the garbage collection (`crate::maintenance`).
    pub upkeep: Upkeep,
    pub build_options: BuildOptions,
    /// Permits for the downloads the master serves as the source of last resort
    /// ([`MasterConfig::fallback_limit`]); a response holds one until its body is dropped.
    pub fallback: Arc<tokio::sync::Semaphore>,
    /// Per-address request rates and new clients (`crate::limits`).
    pub limits: Limits,
    /// Publications, pushed to `GET /api/v1/events` subscribers (`crate::events`).
    pub events: Events,
    /// The signing key and the current revision's statement (`crate::signing`).
    pub signing: Signing,
    /// What opening did with the key (made, loaded, rotated).
    pub key_event: crate::signing::KeyEvent,
    /// Revision notes, build messages and client pins (`crate::history`).
    pub notes: crate::history::Notes,
    /// The dashboard's sessions and live-update subscribers (`crate::dashboard`).
    pub ui: crate::dashboard::Ui,
    /// Packs uploaded by pushes, not yet published (`crate::push`).
    pub push: crate::push::Staging,
}

/// What a revision adds besides its index (see [`Master::publish`]).
pub(crate) struct NewRevision<'a> {
    /// The build that made it; `None` for the repack.
    pub build_id: Option<u64>,
    /// When the build that read the files started (the repack keeps its source's).
    pub build_started_unix: i64,
    pub new_packs: &'a [PackInfo],
    /// The zstd level of `new_packs`.
    pub pack_level: i32,
    /// Published packs now recorded at `pack_level` (rewritten to the same bytes).
    pub relevelled_packs: &'a [u32],
    pub new_chunks: &'a [ChunkLocation],
    pub moved_chunks: &'a [ChunkLocation],
    /// The admin confirmed the mass delete this tree makes.
    pub mass_delete_confirmed: bool,
    /// The admin's message (`crate::history`).
    pub message: Option<String>,
    /// The revision whose tree this publishes again (`hummel rollback`).
    pub rollback_of: Option<u64>,
}

/// Why an index request cannot be answered.
#[derive(Debug)]
pub(crate) enum IndexLookupError {
    NoRevision,
    NoSuchRevision(u64),
    NoSuchPath(RelPath),
    Internal(MasterError),
}

impl Master {
    /// Opens (creating) the data folder, database and store, and loads the current revision.
    /// Blocking.
    pub fn open(config: MasterConfig) -> Result<Master, MasterError> {
        Master::open_with(config, BuildOptions::default())
    }

    /// [`Master::open`] whose builds close a pack at `pack_target` stored bytes instead of
    /// the default 16 MiB: for load harnesses, which want many packs of little data.
    #[doc(hidden)]
    pub fn open_with_pack_target(
        config: MasterConfig,
        pack_target: Option<u64>,
    ) -> Result<Master, MasterError> {
        let mut options = BuildOptions::default();
        if let Some(target) = pack_target {
            options.pack_target = target.max(1);
        }
        Master::open_with(config, options)
    }

    pub(crate) fn open_with(
        config: MasterConfig,
        build_options: BuildOptions,
    ) -> Result<Master, MasterError> {
        if config.repack_level != 0 && !REPACK_LEVELS.contains(&config.repack_level) {
            return Err(MasterError::RepackLevel(config.repack_level));
        }
        fs::create_dir_all(&config.data).map_err(MasterError::io(&config.data))?;
        let revisions_dir = config.data.join("revisions");
        fs::create_dir_all(&revisions_dir).map_err(MasterError::io(&revisions_dir))?;
        revision::clean_temp_files(&revisions_dir)?;
        let db_path = config.data.join("hummel.db");
        let db = Db::open(&db_path)?;
        let store = Arc::new(BlobStore::open(&config.data.join("store"))?);

        let repository_id = db.repository_id()?;
        let (signing, key_event) = Signing::open(
            &config.data,
            &repository_id,
            config.signature_expiry,
            config.rotate_key,
        )?;
        let catalog = Catalog::load(&db, revisions_dir, &store)?;
        let interrupted = db.fail_interrupted_builds(now_unix())?;
        if interrupted > 0 {
            tracing::warn!(
                interrupted,
                "builds interrupted by a restart were marked failed"
            );
        }
        let builds = Builds::load(&db.load_builds()?);
        let mut tracker = Tracker::default();
        for s in db.load_slaves()? {
            tracker.slaves.insert(s.id.clone(), s);
        }
        for c in db.load_clients()? {
            tracker.clients.insert(c.id.clone(), c);
        }
        let identities = Identities::load(db.load_slave_identities()?);
        let current = catalog.current();
        let notes = crate::history::Notes::new(db.load_notes()?, db.load_pins()?);
        tracing::info!(
            data = %config.data.display(),
            revision = current.as_ref().map(|c| c.row.number),
            packs = catalog.pack_count(),
            slaves = tracker.slaves.len(),
            "master opened"
        );
        let liveness = Liveness {
            stale_after: config.stale_after,
            dead_after: config.dead_after,
        };
        let fleet = Fleet::new(tracker, identities, liveness, config.replication);
        let fallback_limit = config.fallback_limit as usize;
        let limits = Limits::new(config.rate_limit);
        let events = Events::new(current.as_ref().map_or(0, |c| c.row.number));
        let push = crate::push::Staging::open(&config.data);
        Ok(Master {
            inner: Arc::new(Inner {
                config,
                db_path,
                repository_id,
                db: Mutex::new(db),
                store,
                metrics: Metrics::default(),
                public_url: RwLock::new(None),
                catalog,
                fleet,
                builds,
                upkeep: Upkeep::default(),
                build_options,
                fallback: Arc::new(tokio::sync::Semaphore::new(fallback_limit)),
                limits,
                events,
                signing,
                key_event,
                notes,
                ui: crate::dashboard::Ui::default(),
                push,
            }),
        })
    }

    /// The URL the master is reached at: the replication source of last resort, the clients'
    /// source of last resort for packs no live slave holds yet and, in serve mode, the embedded
    /// slave's URL. A trailing `/` is removed.
    pub fn set_public_url(&self, url: String) {
        let url = url.trim_end_matches('/').to_string();
        *write(&self.inner.public_url) = Some(url);
    }

    /// The URL given to [`Master::set_public_url`].
    pub fn public_url(&self) -> Option<String> {
        read(&self.inner.public_url).clone()
    }

    /// The whole HTTP API, dashboard, `/health`, `/metrics` and the `/blob` origin.
    pub fn router(&self) -> axum::Router {
        crate::api::router(self.clone())
    }

    /// The configuration.
    pub fn config(&self) -> &MasterConfig {
        &self.inner.config
    }

    /// The pack store (the origin of replication).
    pub fn store(&self) -> &Arc<BlobStore> {
        &self.inner.store
    }

    /// Starts a build on its own thread, or returns the id of the one already running. The
    /// build refuses a mass delete (see `build::check_mass_delete`).
    pub fn start_build(&self) -> Result<u64, MasterError> {
        self.start_build_with(&BuildQuery::default())
    }

    /// [`Master::start_build`] with the request's options: `allow_mass_delete` publishes a
    /// tree the mass-delete guard would refuse, and records the confirmation in the revision.
    /// A build already running keeps its own options.
    pub fn start_build_with(&self, request: &BuildQuery) -> Result<u64, MasterError> {
        let builds = &self.inner.builds;
        // Held across the build's row: builds start one at a time.
        let starts = builds.hold_starts();
        if let Some(id) = starts.running {
            return Ok(id);
        }
        let started = now_unix();
        let id = lock(&self.inner.db).insert_build(started)?;
        self.inner.notes.set_message(id, request.message.clone());
        let run = Arc::new(BuildRun::new(id, started, request.allow_mass_delete));
        builds.begin(&starts, run.clone());
        self.ui_changed();
        let master = self.clone();
        let thread_run = run.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("hummel-build-{id}"))
            .spawn(move || master.run_build(thread_run));
        if let Err(e) = spawned {
            builds.end(
                &run,
                Err(format!("could not start the build thread: {e}")),
                now_unix(),
            );
            if let Err(db) = lock(&self.inner.db).finish_build(&run.status()) {
                tracing::error!(build = id, error = %db, "could not record the failed build");
            }
            return Err(MasterError::Spawn(e));
        }
        Ok(id)
    }

    /// Begins a clean stop: the running build stops at its next file or chunk (or before it
    /// publishes) and publishes nothing, so the current revision stays; a repack stops the same
    /// way; no maintenance round starts, and a build asked for now fails at once. Returns at
    /// once; [`Master::is_idle`] tells when the threads are done. Requests keep being answered
    /// (the server stops taking them).
    pub fn shut_down(&self) {
        self.inner.builds.stop();
        // Event streams end now, so that they do not hold the shutdown until its deadline.
        self.inner.events.close();
        self.inner.ui.close();
    }

    /// [`Master::shut_down`] was called.
    pub fn stopping(&self) -> bool {
        self.inner.builds.stopping()
    }

    /// No build and no maintenance round (repack, collection) runs.
    pub fn is_idle(&self) -> bool {
        !self.build_running() && !self.maintenance_running()
    }

    /// Writes the database's write-ahead log into its file, on a clean stop. Blocking.
    pub fn flush(&self) -> Result<(), MasterError> {
        lock(&self.inner.db).checkpoint()
    }

    /// True while a build runs.
    pub(crate) fn build_running(&self) -> bool {
        self.inner.builds.running().is_some()
    }

    /// Keeps builds from starting until dropped; says which build was running.
    pub(crate) fn builds_guard(&self) -> StartsHeld<'_> {
        self.inner.builds.hold_starts()
    }

    /// The status of build `id`, if known.
    pub fn build_status(&self, id: u64) -> Option<BuildStatus> {
        self.inner.builds.status(id)
    }

    /// The most recent build, if any.
    pub fn latest_build(&self) -> Option<BuildStatus> {
        self.inner.builds.latest()
    }

    /// Number of builds per state.
    pub(crate) fn build_counts(&self) -> [(BuildState, u64); 3] {
        self.inner.builds.counts()
    }

    fn run_build(&self, run: Arc<BuildRun>) {
        tracing::info!(build = run.id, repo = %self.inner.config.repo.display(), "build started");
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| self.build_and_publish(&run)))
            .unwrap_or(Err(BuildError::Panicked));
        match result {
            Ok(revision) => {
                let s = run.status();
                tracing::info!(
                    build = run.id,
                    revision,
                    files = s.files_total,
                    reused = s.files_reused,
                    packs = s.packs_written,
                    "build succeeded"
                );
                self.finish_run(&run, Ok(revision));
            }
            Err(e) => {
                let message = one_line(&e.to_string());
                tracing::error!(build = run.id, error = %message, "build failed");
                self.finish_run(&run, Err(message));
            }
        }
        // Whatever the outcome: a repack this build stopped runs again, new packs of a
        // published revision are below the repack level, and the revision before may hold
        // garbage (or, after a failure, packs no revision lists).
        self.start_maintenance();
    }

    /// Records the outcome and frees the build slot in one step: whoever sees the build
    /// finished can start the next one (`hummel build --wait` twice in a row must build twice).
    fn finish_run(&self, run: &BuildRun, result: Result<u64, String>) {
        // The database first: a restart must never find a finished build recorded as running.
        let mut finished = run.status();
        finished.finished_unix = Some(now_unix());
        match &result {
            Ok(revision) => {
                finished.state = BuildState::Succeeded;
                finished.revision = Some(*revision);
            }
            Err(message) => {
                finished.state = BuildState::Failed;
                finished.error = Some(message.clone());
            }
        }
        if let Err(e) = lock(&self.inner.db).finish_build(&finished) {
            tracing::error!(build = run.id, error = %e, "could not record the build's outcome");
        }
        self.inner
            .builds
            .end(run, result, finished.finished_unix.unwrap_or_else(now_unix));
    }

    /// Runs the pipeline and publishes: index file, one transaction, then memory.
    fn build_and_publish(&self, run: &BuildRun) -> Result<u64, BuildError> {
        // Taken whatever the outcome: a build that publishes nothing drops it.
        let message = self.inner.notes.take_message(run.id);
        let previous = self.current();
        let (packs, next_pack_number) = {
            let t = read(&self.inner.catalog.packs);
            (t.by_number.clone(), t.next_number)
        };
        let inputs = BuildInputs {
            repo: &self.inner.config.repo,
            data_dir: &self.inner.config.data,
            db_path: &self.inner.db_path,
            store: &self.inner.store,
            previous: previous.as_deref(),
            packs: &packs,
            next_pack_number,
            options: self.inner.build_options,
            allow_mass_delete: run.allow_mass_delete,
            follow_symlinks: self.inner.config.follow_symlinks,
            info: &self.inner.config.info,
        };
        let prepared = match build::prepare(&inputs, run)? {
            Preparation::Unchanged => {
                let number = previous.as_ref().map_or(0, |p| p.row.number);
                tracing::info!(revision = number, "nothing changed; no new revision");
                return Ok(number);
            }
            Preparation::Changed(p) => *p,
        };
        // The last moment a shutdown can stop it: after this it publishes in one transaction.
        run.check_cancelled()?;
        self.publish(
            prepared.index,
            &NewRevision {
                build_id: Some(run.id),
                build_started_unix: run.started_unix,
                new_packs: &prepared.new_packs,
                pack_level: self.inner.build_options.zstd_level,
                relevelled_packs: &[],
                new_chunks: &prepared.new_chunks,
                moved_chunks: &[],
                mass_delete_confirmed: prepared.mass_delete_confirmed,
                message,
                rollback_of: None,
            },
        )
    }

    /// Publishes `index` as the next revision (numbered by [`revision::next_number`]): index
    /// file, one transaction, then memory; returns its number. The caller makes sure nobody
    /// else publishes meanwhile (one build at a time; the repack holds the builds' start lock
    /// and checks that no build started).
    pub(crate) fn publish(
        &self,
        mut index: Index,
        new: &NewRevision<'_>,
    ) -> Result<u64, BuildError> {
        let now = now_unix();
        let catalog = &self.inner.catalog;
        let number = revision::next_number(catalog.highest(), now);
        let (encoded, index_hash) = build::finalize(&mut index, number, now)?;
        revision::write_index_file(&catalog.revisions_dir, number, &encoded)?;
        let row = RevisionRow {
            number,
            created_unix: index.created_unix,
            index_hash,
            files: index.file_count() as u64,
            bytes: index.total_size(),
            build_started_unix: new.build_started_unix,
            build_id: new.build_id,
            mass_delete_confirmed: new.mass_delete_confirmed,
        };
        let note = self.note_for(number, &index, new);
        lock(&self.inner.db).publish(&Publication {
            revision: &row,
            note: Some(&note),
            new_packs: new.new_packs,
            pack_level: new.pack_level,
            relevelled_packs: new.relevelled_packs,
            new_chunks: new.new_chunks,
            moved_chunks: new.moved_chunks,
        })?;
        self.inner.notes.record(note);
        // The tree hashes before any lock: the catalog's locks are held for memory only.
        let loaded = LoadedRevision {
            row,
            tree: Arc::new(hummel_core::tree::TreeHashes::compute(&index)),
            index: Arc::new(index),
            encoded: Bytes::from(encoded),
        };
        catalog.record_publication(loaded, new.new_packs, new.pack_level, new.relevelled_packs);
        self.inner.events.published(number);
        Ok(number)
    }

    /// Whether every pack of the current revision has a live copy clients may be sent to (true
    /// without a revision, and always with an embedded store).
    pub(crate) fn current_fetchable(&self) -> bool {
        let Some(current) = self.current() else {
            return true;
        };
        if self.inner.config.embedded_store {
            return true;
        }
        let fleet = &self.inner.fleet;
        let tracker = lock(&fleet.tracker);
        let live = self.client_slaves(&tracker, now_ms());
        let trust = fleet.probes.book();
        current.index.packs.iter().all(|p| {
            live.iter()
                .any(|s| s.packs.contains(&p.number) && trust.serves(&s.id, p.number))
        })
    }

    /// The slaves clients may be sent to now: live, and vetted for a private master's read
    /// token. `locate` lists one for a pack only where a probe verified its claim.
    fn client_slaves<'t>(&self, tracker: &'t Tracker, now: u64) -> Vec<&'t SlaveRecord> {
        let liveness = self.liveness();
        let private = self.inner.config.tokens.read.is_some();
        tracker
            .slaves
            .values()
            .filter(|s| liveness.state(s.last_seen_ms, now) == SlaveState::Live)
            .filter(|s| s.vetting.serves_clients(private))
            .collect()
    }

    /// The current revision, if any.
    pub(crate) fn current(&self) -> Option<Arc<LoadedRevision>> {
        self.inner.catalog.current()
    }

    /// `GET /api/v1/revision`.
    pub(crate) fn revision_info(&self) -> RevisionInfo {
        match self.current() {
            Some(c) => RevisionInfo {
                revision: Some(c.row.number),
                created_unix: Some(c.row.created_unix),
                files: c.row.files,
                bytes: c.row.bytes,
                index_hash: Some(c.row.index_hash),
                repository_id: Some(self.inner.repository_id.clone()),
                mass_delete_confirmed: c.row.mass_delete_confirmed,
                statement: Some(self.statement_of(&c).0),
                key_rotations: self.inner.signing.rotations(),
            },
            None => RevisionInfo {
                revision: None,
                created_unix: None,
                files: 0,
                bytes: 0,
                index_hash: None,
                repository_id: Some(self.inner.repository_id.clone()),
                mass_delete_confirmed: false,
                statement: None,
                key_rotations: self.inner.signing.rotations(),
            },
        }
    }

    /// The last `limit` revisions, newest first.
    #[cfg(test)]
    pub(crate) fn history(&self, limit: usize) -> Vec<RevisionRow> {
        self.inner.catalog.history(limit)
    }

    /// The encoded index of `revision` (default: current) below `path` (default: all), with the
    /// revision's row. Blocking and CPU-bound for subtrees and old revisions.
    pub(crate) fn index_bytes(
        &self,
        revision: Option<u64>,
        path: Option<&RelPath>,
    ) -> Result<(RevisionRow, Bytes), IndexLookupError> {
        let current = self.current().ok_or(IndexLookupError::NoRevision)?;
        if let Some(n) = revision
            && n != current.row.number
            && path.is_none()
        {
            // A whole old revision: its file as it is, without decoding it.
            let row = self.revision_row(n)?;
            let bytes = revision::read_index_bytes(&self.inner.catalog.revisions_dir, n)
                .map_err(|e| self.lookup_failed(n, e))?;
            return Ok((row, bytes));
        }
        let loaded = self.loaded_revision(revision)?;
        let row = loaded.row.clone();
        match path {
            None => Ok((row, loaded.encoded.clone())),
            Some(dir) => {
                let sub = loaded
                    .index
                    .subtree(dir)
                    .ok_or_else(|| IndexLookupError::NoSuchPath(dir.clone()))?;
                Ok((row, Bytes::from(hummel_core::index::encode(&sub))))
            }
        }
    }

    /// The changes of `path` from revision `since` to `revision` (default: current), encoded, or
    /// `None` when no delta can be given (`since` unknown or gone, same revision, or a change of
    /// chunker): the caller then sends the whole index.
    pub(crate) fn index_delta_bytes(
        &self,
        revision: Option<u64>,
        path: Option<&RelPath>,
        since: u64,
    ) -> Result<Option<(RevisionRow, Bytes)>, IndexLookupError> {
        let target = self.loaded_revision(revision)?;
        if since >= target.row.number {
            return Ok(None);
        }
        let Ok(base) = self.loaded_revision(Some(since)) else {
            return Ok(None);
        };
        let delta = match path {
            None => hummel_core::delta::IndexDelta::between(&base.index, &target.index),
            Some(dir) => {
                let t = target
                    .index
                    .subtree(dir)
                    .ok_or_else(|| IndexLookupError::NoSuchPath(dir.clone()))?;
                let Some(b) = base.index.subtree(dir) else {
                    return Ok(None);
                };
                hummel_core::delta::IndexDelta::between(&b, &t)
            }
        };
        Ok(delta.map(|d| {
            (
                target.row.clone(),
                Bytes::from(hummel_core::delta::encode_delta(&d)),
            )
        }))
    }

    /// The history row of revision `n`, if its index file is still there.
    fn revision_row(&self, n: u64) -> Result<RevisionRow, IndexLookupError> {
        let row = self
            .inner
            .catalog
            .row(n)
            .ok_or(IndexLookupError::NoSuchRevision(n))?;
        if !revision::index_path(&self.inner.catalog.revisions_dir, n).is_file() {
            return Err(IndexLookupError::NoSuchRevision(n));
        }
        Ok(row)
    }

    /// Revision `revision` (default: current), decoded.
    pub(crate) fn loaded_revision(
        &self,
        revision: Option<u64>,
    ) -> Result<Arc<LoadedRevision>, IndexLookupError> {
        let current = self.current().ok_or(IndexLookupError::NoRevision)?;
        match revision {
            None => Ok(current),
            Some(n) if n == current.row.number => Ok(current),
            Some(n) => {
                let row = self.revision_row(n)?;
                self.inner
                    .catalog
                    .old_revision(row)
                    .map_err(|e| self.lookup_failed(n, e))
            }
        }
    }

    /// Why reading revision `n`'s index file failed: gone (the garbage collection expired it
    /// after [`Master::revision_row`] found it), or broken.
    pub(crate) fn lookup_failed(&self, n: u64, e: MasterError) -> IndexLookupError {
        if revision::index_path(&self.inner.catalog.revisions_dir, n).is_file() {
            IndexLookupError::Internal(e)
        } else {
            IndexLookupError::NoSuchRevision(n)
        }
    }

    /// Drops revision `n` from the cache of old revisions (its index file is gone).
    pub(crate) fn forget_old_revision(&self, n: u64) {
        self.inner.catalog.forget_old_revision(n);
    }

    pub(crate) fn liveness(&self) -> Liveness {
        Liveness {
            stale_after: self.inner.config.stale_after,
            dead_after: self.inner.config.dead_after,
        }
    }

    fn heartbeat_interval_ms(&self) -> u64 {
        u64::try_from(self.inner.config.heartbeat_interval.as_millis()).unwrap_or(u64::MAX)
    }

    /// The placement of the current revision's packs over the non-dead slaves whose last
    /// probe did not fail: cached, computed again only when an input changed
    /// ([`Fleet::plan`]). Blocking; the caller holds no lock of the fleet.
    fn plan(&self, now: u64) -> Arc<Plan> {
        self.inner.fleet.plan(self.current().as_ref(), now)
    }

    /// Copies of slot `pos` of `plan` on live slaves (not counting one whose last probe
    /// failed), the embedded store included.
    fn live_copies(
        &self,
        plan: &Plan,
        tracker: &Tracker,
        trust: &TrustBook,
        pos: usize,
        now: u64,
    ) -> usize {
        let on_slaves = plan
            .live_holders(tracker, trust, self.liveness(), pos, now)
            .count();
        on_slaves + usize::from(self.inner.config.embedded_store)
    }

    /// What slave `id` should do next, by `plan`. `table_next` is the pack table's next
    /// number when the caller read it: the hashes the slave holds that the master did not know
    /// then are dropped if no pack was published since they were looked up (packs the garbage
    /// collection deleted, or packs of a master whose data was reset), and if there is a
    /// revision at all.
    fn directive(
        &self,
        plan: &Plan,
        tracker: &Tracker,
        id: &str,
        now: u64,
        table_next: u32,
    ) -> SlaveDirective {
        let master_url = self.public_url();
        // Not from a slave whose last probe failed (the fetching slave would verify, and waste
        // its time).
        let trust = self.inner.fleet.probes.book();
        let liveness = self.liveness();
        let mut assign = Vec::new();
        if let Some(pending) = plan.pending(id) {
            // Fewest live copies first, then pack order.
            let mut order: Vec<(usize, usize)> = pending
                .iter()
                .map(|&pos| (self.live_copies(plan, tracker, &trust, pos, now), pos))
                .collect();
            order.sort_unstable();
            for (_, pos) in order.into_iter().take(MAX_ASSIGNMENTS) {
                let slot = plan.slots[pos];
                let mut sources: Vec<String> = plan
                    .live_holders(tracker, &trust, liveness, pos, now)
                    .filter(|s| s.id != id)
                    .map(|s| s.url.clone())
                    .collect();
                if !sources.is_empty() {
                    let turn = slot.number as usize % sources.len();
                    sources.rotate_left(turn);
                }
                if let Some(url) = &master_url {
                    sources.push(url.clone());
                }
                assign.push(Assignment {
                    pack: slot.hash,
                    size: slot.size,
                    sources,
                });
            }
        }
        drop(trust);
        let unknown = match tracker.slaves.get(id) {
            Some(s) if s.foreign_as_of >= table_next && self.current().is_some() => {
                let mut unknown: Vec<Hash> = s.foreign.iter().copied().collect();
                unknown.sort_unstable();
                unknown.truncate(MAX_DROPS);
                unknown
            }
            _ => Vec::new(),
        };
        SlaveDirective {
            slave_id: id.to_string(),
            assign,
            drop: unknown,
            heartbeat_interval_ms: self.heartbeat_interval_ms(),
            hashlist: tracker.slaves.get(id).and_then(|s| s.hashlist),
        }
    }

    /// The directive for slave `id` as of now: the plan first (it may take the tracker to
    /// compute), then the tracker for a moment.
    fn directive_now(&self, id: &str, now: u64, table_next: u32) -> SlaveDirective {
        let plan = self.plan(now);
        let tracker = lock(&self.inner.fleet.tracker);
        self.directive(&plan, &tracker, id, now, table_next)
    }

    /// `POST /slave/hashlist`: upserts the slave, replaces its replica set and gives it a new
    /// hashlist version (epoch, 0) for later changes. Blocking. The database is written under
    /// the slave's ordering stripe only; memory is changed after.
    pub(crate) fn record_hashlist(
        &self,
        hl: &SlaveHashlist,
    ) -> Result<SlaveDirective, MasterError> {
        let fleet = &self.inner.fleet;
        let _order = fleet.order(&hl.slave_id);
        let now = now_ms();
        let (listed, table_next) = {
            let t = read(&self.inner.catalog.packs);
            (t.resolve(&[], &hl.packs), t.next_number)
        };
        let version = HashlistVersion {
            epoch: fleet.next_hashlist_epoch(),
            seq: 0,
        };
        let record = SlaveRecord {
            id: hl.slave_id.clone(),
            url: hl.url.trim_end_matches('/').to_string(),
            quota: hl.quota,
            used: hl.used,
            replicating: 0,
            last_seen_ms: now,
            packs: listed.add.into_iter().collect(),
            foreign: listed.add_foreign.into_iter().collect(),
            foreign_as_of: table_next,
            hashlist: Some(version),
            vetting: Vetting::Accepted,
            // Set below from the record it replaces (the database keeps its own column).
            draining: false,
            served: None,
            egress: None,
        };
        lock(&self.inner.db).record_hashlist(&record)?;
        self.inner
            .metrics
            .hashlists_received
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(slave = %record.id, packs = record.packs.len(),
            foreign = record.foreign.len(), epoch = version.epoch, "hashlist");
        let claims = !record.packs.is_empty();
        {
            let mut tracker = lock(&fleet.tracker);
            let mut record = record;
            match tracker.slaves.get(&record.id) {
                Some(old) => {
                    record.draining = old.draining;
                    (record.served, record.egress) = (old.served, old.egress);
                }
                None => tracing::info!(slave = %record.id, url = %record.url, "new slave"),
            }
            tracker.slaves.insert(record.id.clone(), record);
        }
        fleet.placement_changed();
        if claims {
            fleet.probes.wake();
        }
        Ok(self.directive_now(&hl.slave_id, now, table_next))
    }

    /// A slave's hashlist was refused for its read token (`crate::auth`): no client is sent to
    /// it until a complete hashlist of it is accepted.
    pub(crate) fn refuse_slave(&self, id: &str, url: &str, why: &str) {
        self.inner
            .metrics
            .slaves_refused
            .fetch_add(1, Ordering::Relaxed);
        if let Some(s) = lock(&self.inner.fleet.tracker).slaves.get_mut(id) {
            s.vetting = Vetting::Refused;
        }
        tracing::warn!(slave = %id, url, "refused a slave: {why}");
    }

    /// `POST /slave/heartbeat`; `None` when the slave is unknown. Blocking.
    ///
    /// Corrupt packs are always removed from the slave's replica set. Hashlist changes are
    /// applied after them, in the same transaction, only if [`SlaveRecord::accepts`] them: they
    /// fit the version held, no hash the master did not know may have become a pack since, and
    /// the master then counts as many packs as the slave reports. The answer then names the
    /// version they propose. Otherwise nothing of them is applied and the answer's `hashlist`
    /// is the version still held (a stale request) or `None` (the version is dropped): either
    /// way the slave announces its complete hashlist again.
    ///
    /// Under the slave's ordering stripe: the decision (tracker, a moment), the transaction
    /// (no lock others read under), then memory (tracker, a moment).
    pub(crate) fn record_heartbeat(
        &self,
        hb: &Heartbeat,
    ) -> Result<Option<SlaveDirective>, MasterError> {
        let fleet = &self.inner.fleet;
        let _order = fleet.order(&hb.slave_id);
        let now = now_ms();
        let (corrupt, changes, table_next) = {
            let t = read(&self.inner.catalog.packs);
            let corrupt = t.resolve(&hb.corrupt, &[]);
            let changes = hb
                .hashlist
                .as_ref()
                .map(|c| (c, t.resolve(&c.removed, &c.added)));
            (corrupt, changes, t.next_number)
        };
        // What to write: the corrupt packs, and the hashlist changes if they apply. Only this
        // slave's requests change its record's claims and version, and they hold its stripe.
        let outcome = {
            let tracker = lock(&fleet.tracker);
            let Some(record) = tracker.slaves.get(&hb.slave_id) else {
                return Ok(None);
            };
            changes.map(|(c, delta)| {
                let combined = corrupt.clone().then(delta);
                let checked = record.accepts(c, &combined, hb.packs, table_next);
                (c, checked.map(|()| combined))
            })
        };
        let change = match &outcome {
            Some((_, Ok(combined))) => combined,
            _ => &corrupt,
        };
        lock(&self.inner.db).record_heartbeat(
            &hb.slave_id,
            hb.used,
            hb.replicating,
            now,
            &change.remove,
            &change.add,
        )?;
        let liveness = self.liveness();
        let metrics = &self.inner.metrics;
        let moved = {
            let mut tracker = lock(&fleet.tracker);
            let Some(s) = tracker.slaves.get_mut(&hb.slave_id) else {
                return Ok(None);
            };
            // Placement inputs: a replica change, a dead slave back, a quota's usage.
            let moved = !change.is_empty()
                || liveness.state(s.last_seen_ms, now) == SlaveState::Dead
                || (s.quota.is_some() && s.used != hb.used);
            s.used = hb.used;
            s.replicating = hb.replicating;
            s.last_seen_ms = now;
            s.record_served(hb.bytes_served, now);
            s.apply(change);
            match &outcome {
                None => {}
                Some((c, Ok(combined))) => {
                    s.hashlist = Some(c.proposed());
                    s.foreign_as_of = table_next;
                    if c.seq != c.base {
                        metrics.hashlist_changes.fetch_add(1, Ordering::Relaxed);
                    }
                    if !combined.is_empty() {
                        tracing::debug!(slave = %s.id, added = c.added.len(),
                            removed = c.removed.len(), seq = c.seq, "hashlist changes applied");
                    }
                }
                Some((_, Err(refusal))) => {
                    if refusal.forgets_version() {
                        s.hashlist = None;
                    }
                    metrics.hashlist_refusals.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(slave = %s.id, ?refusal,
                        "hashlist changes not applied; asking for the complete hashlist");
                }
            }
            moved
        };
        if moved {
            fleet.placement_changed();
        }
        if !change.add.is_empty() {
            fleet.probes.wake();
        }
        if !hb.corrupt.is_empty() {
            tracing::warn!(slave = %hb.slave_id, corrupt = hb.corrupt.len(), "slave reported corrupt packs");
        }
        Ok(Some(self.directive_now(&hb.slave_id, now, table_next)))
    }

    /// The master's own URL, when it offers itself to clients as the source of last resort for
    /// packs no live slave holds (not in serve mode, where its store is a slave anyway).
    fn fallback_url(&self) -> Option<String> {
        let config = &self.inner.config;
        if config.embedded_store || config.fallback_limit == 0 {
            return None;
        }
        self.public_url()
    }

    /// Downloads the master is serving now as the clients' source of last resort.
    pub(crate) fn fallback_active(&self) -> u64 {
        let limit = self.inner.config.fallback_limit as usize;
        limit.saturating_sub(self.inner.fallback.available_permits()) as u64
    }

    /// `POST /api/v1/locate`: live holders per pack, rotated per request to spread load. A pack
    /// no live slave holds (a new revision still replicating) lists the master itself, the source
    /// of last resort, if its store has the pack. With a read token, only slaves that showed
    /// the master's read-token digest since it started are listed (`crate::auth`). Locating
    /// changes nothing: in particular it keeps no pack from the garbage collection.
    pub(crate) fn locate(&self, req: &LocateRequest) -> LocateResponse {
        let now = now_ms();
        let fleet = &self.inner.fleet;
        let turn = fleet.next_locate_turn();
        let embedded_url = if self.inner.config.embedded_store {
            self.public_url()
        } else {
            None
        };
        let fallback_url = self.fallback_url();
        let mut fallback = None;
        // Memory only: no lock here is ever held across a database commit.
        let packs = read(&self.inner.catalog.packs);
        let tracker = lock(&fleet.tracker);
        let trust = fleet.probes.book();
        let live = self.client_slaves(&tracker, now);
        let replication = self.inner.config.replication;
        let mut slaves: Vec<SlaveEndpoint> = Vec::new();
        let mut positions: HashMap<String, u32> = HashMap::new();
        let mut position = |id: &str, url: &str| -> u32 {
            if let Some(&p) = positions.get(id) {
                return p;
            }
            let p = slaves.len() as u32;
            slaves.push(SlaveEndpoint {
                id: id.to_string(),
                url: url.to_string(),
            });
            positions.insert(id.to_string(), p);
            p
        };
        let holders = req
            .packs
            .iter()
            .map(|number| {
                if !packs.by_number.contains_key(number) {
                    return Vec::new();
                }
                // Only where a probe verified the claim (`crate::probe`); a draining slave only
                // while the others lack copies (`crate::placement::serves_while_draining`).
                let serving =
                    |s: &&&SlaveRecord| s.packs.contains(number) && trust.serves(&s.id, *number);
                let elsewhere = live.iter().filter(|s| !s.draining).filter(serving).count();
                let draining_serve =
                    crate::placement::serves_while_draining(elsewhere, replication);
                let mut list: Vec<u32> = live
                    .iter()
                    .filter(serving)
                    .filter(|s| !s.draining || draining_serve)
                    .map(|s| position(&s.id, &s.url))
                    .collect();
                if let Some(url) = &embedded_url {
                    list.push(position(EMBEDDED_SLAVE_ID, url));
                }
                if list.is_empty()
                    && let Some(url) = &fallback_url
                    && packs
                        .by_number
                        .get(number)
                        .is_some_and(|p| self.inner.store.contains(&p.hash))
                {
                    let at = position(FALLBACK_ID, url);
                    fallback = Some(at);
                    list.push(at);
                }
                if !list.is_empty() {
                    let k = (turn as usize).wrapping_add(*number as usize) % list.len();
                    list.rotate_left(k);
                }
                list
            })
            .collect();
        LocateResponse {
            slaves,
            holders,
            fallback,
            target: Some(self.inner.config.replication),
        }
    }

    /// `GET /api/v1/status`. Blocking (may compute placement, if an input changed).
    ///
    /// A pack is under-replicated when it has fewer live copies than `min(replication, non-dead
    /// slaves + embedded store)`: with one slave and replication 2, one live copy is all there
    /// can be. It is unavailable with no live copy at all.
    pub(crate) fn status(&self) -> StatusResponse {
        let now = now_ms();
        let liveness = self.liveness();
        let plan = self.plan(now);
        let fleet = &self.inner.fleet;
        let tracker = lock(&fleet.tracker);
        let mut slaves = Vec::with_capacity(tracker.slaves.len() + 1);
        if self.inner.config.embedded_store {
            slaves.push(SlaveStatus {
                id: EMBEDDED_SLAVE_ID.to_string(),
                url: self.public_url().unwrap_or_default(),
                state: SlaveState::Live,
                last_seen_ms: 0,
                packs: self.inner.store.count() as u64,
                used: self.inner.store.used(),
                quota: None,
                pending: 0,
                verified: None,
                withheld: None,
                key: None,
                drain: None,
                egress: None,
            });
        }
        let private = self.inner.config.tokens.read.is_some();
        let trust = fleet.probes.book();
        for s in tracker.slaves.values() {
            let state = liveness.state(s.last_seen_ms, now);
            slaves.push(SlaveStatus {
                id: s.id.clone(),
                url: s.url.clone(),
                state,
                last_seen_ms: now.saturating_sub(s.last_seen_ms),
                packs: s.packs.len() as u64,
                used: s.used,
                quota: s.quota,
                pending: plan.pending(&s.id).map_or(0, |p| p.len() as u64),
                verified: Some(trust.verified(&s.id)),
                withheld: trust.withheld(s, state, private, now),
                key: self.slave_key_fingerprint(&s.id),
                drain: s.draining.then(|| {
                    if plan.drained(&s.id) {
                        DrainState::Drained
                    } else {
                        DrainState::Draining
                    }
                }),
                egress: s.egress.filter(|_| state == SlaveState::Live),
            });
        }
        let target = self.inner.config.replication;
        // A pack cannot have more copies than there are non-dead holders to put them on.
        let reachable =
            (target as usize).min(plan.ids.len() + usize::from(self.inner.config.embedded_store));
        let mut replication = ReplicationHealth {
            target,
            packs: plan.slots.len() as u64,
            under_replicated: 0,
            unavailable: 0,
        };
        // Still replicating: below the copies there can be, or (with no slave at all) none.
        let (mut below, mut without_copy) = (0, 0);
        for pos in 0..plan.slots.len() {
            let copies = self.live_copies(&plan, &tracker, &trust, pos, now);
            if copies < reachable {
                replication.under_replicated += 1;
            }
            if copies == 0 {
                replication.unavailable += 1;
                without_copy += 1;
            }
            if copies < reachable.max(1) {
                below += 1;
            }
        }
        drop(trust);
        let replicating = (below > 0).then(|| ReplicatingStatus {
            packs: below,
            without_copy,
            master_fallback: without_copy > 0 && self.fallback_url().is_some(),
            fallback_active: self.fallback_active(),
            fallback_limit: u64::from(self.inner.config.fallback_limit),
        });
        let (mut clients, clients_total) = Master::recent_clients(&tracker, now);
        drop(tracker);
        self.mark_pins(&mut clients);
        StatusResponse {
            api_version: hummel_proto::API_VERSION,
            revision: self.revision_info(),
            build: self.latest_build(),
            slaves,
            replication,
            clients,
            clients_total: Some(clients_total),
            repack: self.repack_status(),
            gc: Some(self.gc_status()),
            replicating,
            signing: Some(self.signing_status()),
            pushes: self.inner.push.progress.list(now),
        }
    }

    /// Logs slave state transitions (live → stale → dead and back).
    pub(crate) fn observe_slaves(&self) {
        let now = now_ms();
        let liveness = self.liveness();
        let mut guard = lock(&self.inner.fleet.tracker);
        let Tracker {
            slaves, observed, ..
        } = &mut *guard;
        for s in slaves.values() {
            let state = liveness.state(s.last_seen_ms, now);
            let before = observed.insert(s.id.clone(), state);
            if before.is_some_and(|b| b != state) {
                tracing::info!(slave = %s.id, ?state, "slave state changed");
                self.ui_changed();
            }
        }
        // (A slave going dead needs no announcement to the placement: the plan foresees it.)
    }
}

/// Periodic work until `shutdown` completes: watches slave liveness, starts a maintenance
/// round (repack, garbage collection) every [`Master::gc_period`], expires clients every
/// [`Master::client_expiry_period`], and probes slaves' claims (`crate::probe`).
pub async fn run_background(master: Master, shutdown: impl Future<Output = ()>) {
    let period = master
        .inner
        .config
        .heartbeat_interval
        .max(Duration::from_millis(500));
    // A revision left below the repack level (by a restart during a pass, or a new level),
    // and garbage whose grace ended while the master was down.
    master.start_maintenance();
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let gc_period = master.gc_period();
    let mut gc_ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + gc_period, gc_period);
    gc_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut clients_ticker = tokio::time::interval(master.client_expiry_period());
    clients_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (stop_announcing, stopped) = tokio::sync::oneshot::channel::<()>();
    let announcing = tokio::spawn(crate::events::announce(master.clone(), async move {
        let _ = stopped.await;
    }));
    // The prober (`crate::probe`) runs beside this loop and stops with it.
    let probes = tokio_util::sync::CancellationToken::new();
    let _prober = tokio::spawn(crate::probe::run(master.clone(), probes.clone()));
    let _stop_probes = probes.drop_guard();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = gc_ticker.tick() => master.start_maintenance(),
            _ = clients_ticker.tick() => {
                let m = master.clone();
                match tokio::task::spawn_blocking(move || m.expire_clients()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "could not expire old clients"),
                    Err(e) => tracing::error!(error = %e, "client expiry failed"),
                }
            }
            _ = ticker.tick() => {
                // Addresses back to a full budget: an address that rotates (an IPv6 /64 each
                // time) adds entries only as fast as this drops them.
                master.inner.limits.forget_idle();
                let m = master.clone();
                if let Err(e) = tokio::task::spawn_blocking(move || m.observe_slaves()).await {
                    tracing::error!(error = %e, "background check failed");
                }
            }
        }
    }
    let _ = stop_announcing.send(());
    let _ = announcing.await;
}

/// The first line of a message, for build errors.
fn one_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

#[cfg(test)]
impl Master {
    /// Makes a slave look silent for `by_ms` longer.
    pub(crate) fn age_slave(&self, id: &str, by_ms: u64) {
        if let Some(s) = lock(&self.inner.fleet.tracker).slaves.get_mut(id) {
            s.last_seen_ms = s.last_seen_ms.saturating_sub(by_ms);
        }
        // Not a change real time makes: the plan foresaw another moment of death.
        self.inner.fleet.placement_changed();
    }
}
