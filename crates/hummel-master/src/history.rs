//! The revision history: what each revision brings ([`NoteRow`]: the admin's message, the
//! counts of files added, updated and removed and the bytes written, and for a rollback the
//! revision it published again), the changelog between any two stored revisions, and the
//! rollback that publishes an older revision's tree as the newest revision.
//!
//! - [`Notes`]: the notes mirrored from the database (`revision_notes`, written in the
//!   transaction that publishes the revision: [`Master::note_for`] computes one from the index
//!   before and the new one), and the messages of builds not yet published, by build id.
//! - [`Master::revisions`] (`GET /api/v1/revisions`): the history, newest first, bounded, with
//!   each revision's note, whether its index is still stored, and why the garbage collection
//!   keeps it (`crate::gc::retention`).
//! - [`Master::changelog`] (`GET /api/v1/changes`): `hummel_core::changes` between two stored
//!   revisions, bounded (the counts cover the whole).
//! - [`Master::rollback`] (`POST /api/v1/rollback`): under the builds lock (no build runs, a
//!   repack under way stops), revision N's index is published again through
//!   [`Master::publish`], as a build's would be: the mass-delete guard against the current
//!   revision, a new number, a signed statement, an event. It needs N's index and every pack
//!   it lists still stored; a rollback to a collected revision fails in one line.
//!
//! Everything here that reads indexes or the database is blocking; the handlers at the bottom
//! call it through `spawn_blocking`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, RwLock};

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use hummel_core::Index;
use hummel_core::changes::changes;
use hummel_proto::api::{
    ChangesQuery, ChangesResponse, MAX_CHANGED_FILES, MAX_CHANGED_MODS, MAX_REVISIONS_LISTED,
    RevisionEntry, RevisionInfo, RevisionsQuery, RevisionsResponse, RollbackRequest,
    RollbackResponse, valid_message,
};

use crate::api::{ApiError, ApiJson, Bounded, blocking};
use crate::auth::{ReadAccess, WriteAccess};
use crate::db::NoteRow;
use crate::error::MasterError;
use crate::master::{IndexLookupError, Master, NewRevision};
use crate::{lock, read, revision, write};

/// Revision notes, the messages of builds under way, and the clients' pins.
#[derive(Debug, Default)]
pub(crate) struct Notes {
    /// The message each build was started with, until it publishes (or fails).
    messages: Mutex<HashMap<u64, String>>,
    /// Each revision's note, by number (revisions from before notes have none).
    notes: RwLock<BTreeMap<u64, NoteRow>>,
    /// Client id → (the revision it reported it is pinned to, when; Unix ms). Bounded by the
    /// clients the master accepts reports of.
    pins: Mutex<HashMap<String, (u64, u64)>>,
}

impl Notes {
    /// The notes and pins loaded from the database.
    pub(crate) fn new(rows: Vec<NoteRow>, pins: Vec<(String, u64, u64)>) -> Notes {
        Notes {
            messages: Mutex::default(),
            notes: RwLock::new(rows.into_iter().map(|n| (n.number, n)).collect()),
            pins: Mutex::new(pins.into_iter().map(|(id, n, t)| (id, (n, t))).collect()),
        }
    }

    /// Keeps `message` for build `build` until it publishes.
    pub(crate) fn set_message(&self, build: u64, message: Option<String>) {
        if let Some(m) = message.filter(|m| !m.trim().is_empty()) {
            lock(&self.messages).insert(build, m);
        }
    }

    /// The message build `build` was started with (taken: asked once).
    pub(crate) fn take_message(&self, build: u64) -> Option<String> {
        lock(&self.messages).remove(&build)
    }

    /// The note of revision `n`, if one was recorded.
    pub(crate) fn get(&self, n: u64) -> Option<NoteRow> {
        read(&self.notes).get(&n).cloned()
    }

    /// Remembers a note the database now holds.
    pub(crate) fn record(&self, note: NoteRow) {
        write(&self.notes).insert(note.number, note);
    }

    /// The revisions that are rollbacks (each starts a tree of its own, as a build does).
    pub(crate) fn rollbacks(&self) -> std::collections::BTreeSet<u64> {
        read(&self.notes)
            .values()
            .filter(|n| n.rollback_of.is_some())
            .map(|n| n.number)
            .collect()
    }
}

/// Why a history request cannot be answered.
#[derive(Debug)]
pub(crate) enum HistoryError {
    /// No revision is published yet.
    NoRevision,
    /// No such revision, or its index is no longer stored.
    Unavailable(u64),
    /// The revision's index is stored, but packs it lists were collected.
    Collected {
        revision: u64,
        missing: usize,
    },
    /// The revision is the current one already.
    AlreadyCurrent(u64),
    /// A build runs, or the master is stopping.
    Busy(String),
    /// The mass-delete guard refused (one line).
    MassDelete(String),
    /// A message that is too long or holds control characters.
    BadMessage,
    Internal(String),
}

impl From<IndexLookupError> for HistoryError {
    fn from(e: IndexLookupError) -> Self {
        match e {
            IndexLookupError::NoRevision => HistoryError::NoRevision,
            IndexLookupError::NoSuchRevision(n) => HistoryError::Unavailable(n),
            IndexLookupError::NoSuchPath(p) => HistoryError::Internal(format!("path {p}")),
            IndexLookupError::Internal(e) => HistoryError::Internal(e.to_string()),
        }
    }
}

impl From<MasterError> for HistoryError {
    fn from(e: MasterError) -> Self {
        HistoryError::Internal(e.to_string())
    }
}

impl From<HistoryError> for ApiError {
    fn from(e: HistoryError) -> Self {
        let conflict = |code: &'static str, message: String| ApiError::Refused {
            status: StatusCode::CONFLICT,
            code,
            message,
            retry_after: None,
        };
        match e {
            HistoryError::NoRevision => ApiError::NotFound {
                code: "no_revision",
                message: "no revision has been published yet".into(),
            },
            HistoryError::Unavailable(n) => ApiError::NotFound {
                code: "no_such_revision",
                message: format!(
                    "revision {n} is not available (never published, or its index was \
                     collected)"
                ),
            },
            HistoryError::Collected { revision, missing } => conflict(
                "revision_collected",
                format!(
                    "revision {revision} cannot be published again: {missing} of its packs \
                     were garbage-collected"
                ),
            ),
            HistoryError::AlreadyCurrent(n) => conflict(
                "already_current",
                format!("revision {n} is the current revision already"),
            ),
            HistoryError::Busy(m) => conflict("busy", m),
            HistoryError::MassDelete(m) => conflict("mass_delete", m),
            HistoryError::BadMessage => ApiError::BadRequest(format!(
                "message: at most {} bytes, no control characters but newlines and tabs",
                hummel_proto::api::MAX_MESSAGE_LEN
            )),
            HistoryError::Internal(m) => ApiError::Internal(m),
        }
    }
}

impl Master {
    /// Records the pin of an accepted client report (`None`: not pinned). Blocking.
    pub(crate) fn record_pin(
        &self,
        client: &str,
        revision: Option<u64>,
    ) -> Result<(), MasterError> {
        let now = crate::now_ms();
        let cutoff = self.pin_cutoff_ms(now);
        let mut pins = lock(&self.inner.notes.pins);
        if revision.is_none() && !pins.contains_key(client) {
            return Ok(());
        }
        lock(&self.inner.db).record_pin(client, revision, now, cutoff)?;
        match revision {
            Some(n) => pins.insert(client.to_string(), (n, now)),
            None => pins.remove(client),
        };
        pins.retain(|_, (_, seen)| *seen >= cutoff);
        Ok(())
    }

    /// Pins reported before this are forgotten: as old as the clients the master still lists.
    fn pin_cutoff_ms(&self, now_ms: u64) -> u64 {
        let retention =
            u64::try_from(self.inner.config.client_retention.as_millis()).unwrap_or(u64::MAX);
        now_ms.saturating_sub(retention)
    }

    /// The revisions clients recently reported they are pinned to.
    pub(crate) fn pinned_revisions(&self) -> std::collections::BTreeSet<u64> {
        let cutoff = self.pin_cutoff_ms(crate::now_ms());
        lock(&self.inner.notes.pins)
            .values()
            .filter(|(_, seen)| *seen >= cutoff)
            .map(|(n, _)| *n)
            .collect()
    }

    /// Fills in the pins of `clients` (status), as recently reported. Takes the pins' lock: call
    /// without the tracker's.
    pub(crate) fn mark_pins(&self, clients: &mut [hummel_proto::api::ClientStatus]) {
        let cutoff = self.pin_cutoff_ms(crate::now_ms());
        let pins = lock(&self.inner.notes.pins);
        for c in clients {
            c.pinned = pins
                .get(&c.id)
                .filter(|(_, seen)| *seen >= cutoff)
                .map(|(n, _)| *n);
        }
    }

    /// `GET /api/v1/revision?revision=N` for a client pinned to N: N's identity with a
    /// statement about it under the pinned-statement magic (`crate::signing`); the current
    /// revision's usual answer when N is current. Blocking (decodes an older index).
    pub(crate) fn pinned_revision_info(&self, n: u64) -> Result<RevisionInfo, HistoryError> {
        let current = self.current().ok_or(HistoryError::NoRevision)?;
        if current.row.number == n {
            return Ok(self.revision_info());
        }
        let loaded = self.loaded_revision(Some(n))?;
        let row = &loaded.row;
        let about = crate::signing::About {
            revision: row.number,
            tree_digest: loaded.tree.digest(),
            created_unix: row.created_unix,
            mass_delete_confirmed: row.mass_delete_confirmed,
        };
        Ok(RevisionInfo {
            revision: Some(row.number),
            created_unix: Some(row.created_unix),
            files: row.files,
            bytes: row.bytes,
            index_hash: Some(row.index_hash),
            repository_id: Some(self.inner.repository_id.clone()),
            mass_delete_confirmed: row.mass_delete_confirmed,
            statement: Some(
                self.inner
                    .signing
                    .pinned_statement(&about, crate::now_unix()),
            ),
            key_rotations: self.inner.signing.rotations(),
        })
    }

    /// The note of a revision about to be published as `number` with `index`: what changed
    /// from the current revision, and the message. CPU-bound (a pass over both indexes).
    pub(crate) fn note_for(&self, number: u64, index: &Index, new: &NewRevision<'_>) -> NoteRow {
        let before = self.current();
        let summary = changes(before.as_ref().map(|c| &*c.index), index).summary();
        NoteRow {
            number,
            message: new.message.clone(),
            summary,
            rollback_of: new.rollback_of,
        }
    }

    /// The history, newest first: at most `limit` (bounded by [`MAX_REVISIONS_LISTED`])
    /// revisions below `before`. Blocking (looks for index files).
    pub(crate) fn revisions(&self, q: &RevisionsQuery) -> RevisionsResponse {
        let limit = q
            .limit
            .unwrap_or(MAX_REVISIONS_LISTED)
            .min(MAX_REVISIONS_LISTED);
        let retained = self.retention();
        let history = read(&self.inner.catalog.history).clone();
        let current = history.last().map(|r| r.number);
        let revisions = history
            .iter()
            .rev()
            .filter(|r| q.before.is_none_or(|b| r.number < b))
            .take(limit)
            .map(|r| {
                let note = self.inner.notes.get(r.number);
                RevisionEntry {
                    revision: r.number,
                    created_unix: r.created_unix,
                    files: r.files,
                    bytes: r.bytes,
                    message: note.as_ref().and_then(|n| n.message.clone()),
                    changes: note.as_ref().map(|n| n.summary),
                    rollback_of: note.as_ref().and_then(|n| n.rollback_of),
                    // A repack has no message; a rollback or a push has one.
                    repack: r.build_id.is_none()
                        && note
                            .as_ref()
                            .is_none_or(|n| n.rollback_of.is_none() && n.message.is_none()),
                    available: Some(r.number) == current
                        || revision::index_path(&self.inner.catalog.revisions_dir, r.number)
                            .is_file(),
                    retained: retained.get(&r.number).cloned().unwrap_or_default(),
                }
            })
            .collect();
        RevisionsResponse {
            revisions,
            total: history.len() as u64,
        }
    }

    /// What changed from `from` (default: the revision before `to`) to `to` (default: the
    /// current one), bounded. Blocking and CPU-bound (decodes old indexes).
    pub(crate) fn changelog(&self, q: &ChangesQuery) -> Result<ChangesResponse, HistoryError> {
        let current = self.current().ok_or(HistoryError::NoRevision)?;
        let to = q.to.unwrap_or(current.row.number);
        let from = match q.from {
            Some(n) => Some(n),
            None => {
                let history = read(&self.inner.catalog.history);
                if !history.iter().any(|r| r.number == to) {
                    return Err(HistoryError::Unavailable(to));
                }
                history.iter().rev().map(|r| r.number).find(|&n| n < to)
            }
        };
        let new = self.loaded_revision(Some(to))?;
        let old = match from {
            Some(n) => Some(self.loaded_revision(Some(n))?),
            None => None,
        };
        let mut log = changes(old.as_ref().map(|o| &*o.index), &new.index);
        let summary = log.summary();
        let (mods_total, files_total) = (log.mods.len() as u64, log.files.len() as u64);
        let truncated = log.truncate(MAX_CHANGED_MODS, MAX_CHANGED_FILES);
        Ok(ChangesResponse {
            from,
            to,
            summary,
            mods: log.mods,
            files: log.files,
            mods_total,
            files_total,
            truncated,
        })
    }

    /// Publishes revision `req.revision`'s tree again as the newest revision (see the module
    /// documentation). Blocking: decodes the index, writes the new one, one transaction.
    pub(crate) fn rollback(&self, req: &RollbackRequest) -> Result<RollbackResponse, HistoryError> {
        if req.message.as_deref().is_some_and(|m| !valid_message(m)) {
            return Err(HistoryError::BadMessage);
        }
        let n = req.revision;
        let number = {
            // No build starts, and no collection runs, until it is published.
            let book = self.builds_guard();
            if self.stopping() {
                return Err(HistoryError::Busy("the master is stopping".into()));
            }
            if let Some(id) = book.running {
                return Err(HistoryError::Busy(format!(
                    "build {id} is running; roll back once it finished"
                )));
            }
            // A repack under way stops and publishes nothing.
            self.inner.builds.interrupt(&book);
            let current = self.current().ok_or(HistoryError::NoRevision)?;
            if current.row.number == n {
                return Err(HistoryError::AlreadyCurrent(n));
            }
            let target = self.loaded_revision(Some(n))?;
            let missing = {
                let table = read(&self.inner.catalog.packs);
                target
                    .index
                    .packs
                    .iter()
                    .filter(|p| {
                        table
                            .by_number
                            .get(&p.number)
                            .is_none_or(|t| t.hash != p.hash)
                            || !self.inner.store.contains(&p.hash)
                    })
                    .count()
            };
            if missing > 0 {
                return Err(HistoryError::Collected {
                    revision: n,
                    missing,
                });
            }
            if !req.allow_mass_delete {
                crate::build::check_mass_delete(
                    &self.inner.config.repo,
                    Some(&current.index),
                    target.index.files().map(|(p, f)| (p, f.size)),
                    false,
                )
                .map_err(|m| {
                    HistoryError::MassDelete(format!(
                        "refusing the rollback to {n}: {}; re-run with --allow-mass-delete to \
                         publish it anyway",
                        m.finding().replace("the build removes", "it removes")
                    ))
                })?;
            }
            let message = req
                .message
                .clone()
                .filter(|m| !m.trim().is_empty())
                .unwrap_or_else(|| format!("rollback to {n}"));
            self.publish(
                (*target.index).clone(),
                &NewRevision {
                    build_id: None,
                    // The tree was read then: a later build reuses nothing by its stamps.
                    build_started_unix: target.row.build_started_unix,
                    new_packs: &[],
                    pack_level: self.inner.build_options.zstd_level,
                    relevelled_packs: &[],
                    new_chunks: &[],
                    moved_chunks: &[],
                    mass_delete_confirmed: req.allow_mass_delete,
                    message: Some(message),
                    rollback_of: Some(n),
                },
            )
            .map_err(|e| HistoryError::Internal(e.to_string()))?
        };
        tracing::info!(revision = number, rollback_of = n, "rolled back");
        // The revision before may hold garbage now, as after a build.
        self.start_maintenance();
        Ok(RollbackResponse {
            revision: number,
            rollback_of: n,
        })
    }
}

impl Bounded for RollbackRequest {
    fn limit(_: &Master) -> usize {
        8 << 10
    }
}

/// `GET /api/v1/revisions` (read token).
pub(crate) async fn revisions_handler(
    _: ReadAccess,
    State(master): State<Master>,
    query: Result<Query<RevisionsQuery>, QueryRejection>,
) -> Result<Json<RevisionsResponse>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(format!("bad query: {e}")))?;
    Ok(Json(blocking(move || master.revisions(&q)).await?))
}

/// `GET /api/v1/changes` (read token).
pub(crate) async fn changes_handler(
    _: ReadAccess,
    State(master): State<Master>,
    query: Result<Query<ChangesQuery>, QueryRejection>,
) -> Result<Json<ChangesResponse>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(format!("bad query: {e}")))?;
    Ok(Json(blocking(move || master.changelog(&q)).await??))
}

/// `POST /api/v1/rollback` (write token).
pub(crate) async fn rollback_handler(
    _: WriteAccess,
    State(master): State<Master>,
    ApiJson(req): ApiJson<RollbackRequest>,
) -> Result<Json<RollbackResponse>, ApiError> {
    Ok(Json(blocking(move || master.rollback(&req)).await??))
}
